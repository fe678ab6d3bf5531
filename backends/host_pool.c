/* nnx's pool of C worker threads, for the host kernels (included by host_kernels.c).
 *
 * Why not the Python pool (threads.parallel_rows): on the 2-vCPU VM a hand-off through Python's
 * ThreadPoolExecutor costs ~100 us (a woken thread, the GIL, a woken caller), more than most of a
 * training step's kernels take on one thread. Here a task is a C function run over row ranges,
 * handed over through one counter: workers spin on it for NNX_SPIN_US microseconds after their
 * last task (OpenBLAS's workers do the same), then sleep on a condition variable. Measured on that
 * VM with a two-thread ping-pong in C: a spinning worker picks a task up in ~0.2 us, a sleeping one
 * in ~35 us; benchmarks/bench_pool.py times whole tasks (a ReLU pass of 2^10 floats: 2.6 us on one
 * thread, 3.1 us split over two).
 *
 * nnx_pool_run(task, args, n, threads, spin_us) cuts [0, n) into `threads` contiguous ranges (sizes
 * differ by at most one, the first on the caller) exactly as threads.row_chunks does and calls
 * task(args, lo, hi, part) for range `part` (a task indexes per-thread scratch by it); a task
 * writes its own rows only. One run at a time: a second caller (another Python thread, or a task
 * that runs the pool itself) runs its whole range on its own thread. After fork() the child
 * starts a fresh pool on its first run (the threads are not copied).
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

typedef void (*nnx_task)(const i64* args, i64 lo, i64 hi, i64 part);

#define NNX_POOL_MAX 256

static struct {
    pthread_mutex_t run;  /* held by the caller of a parallel run */
    pthread_mutex_t mu;   /* guards sleeping and the wake-up */
    pthread_cond_t wake;
    pthread_t th[NNX_POOL_MAX];
    int workers;          /* started worker threads (at least the run's thread count - 1) */
    i64 parts;            /* ranges of this run: the caller takes range 0, worker i range i */
    int sleepers;
    int atfork;
    long gen;             /* bumped (under mu) to start a run; workers read it with acquire */
    long pending;         /* workers still busy in this run */
    long born;            /* gen when the workers were started */
    int stop;
    nnx_task fn;
    const i64* args;
    i64 n;
    i64 spin_ns;
} nnx_pool = {.run = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static i64 nnx_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (i64)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void nnx_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* range `part` of `parts` over [0, n), as threads.row_chunks */
static void nnx_part(i64 n, i64 parts, i64 part, i64* lo, i64* hi) {
    const i64 base = n / parts, extra = n % parts;
    *lo = part * base + (part < extra ? part : extra);
    *hi = *lo + base + (part < extra);
}

static void* nnx_worker(void* arg) {
    const i64 id = (i64)(size_t)arg;
    long seen = nnx_pool.born; /* not gen: a run may start before this thread does */
    for (;;) {
        long g;
        const i64 t0 = nnx_now_ns();
        for (unsigned k = 1; (g = __atomic_load_n(&nnx_pool.gen, __ATOMIC_ACQUIRE)) == seen; ++k) {
            nnx_relax();
            if ((k & 255) == 0 && nnx_now_ns() - t0 > __atomic_load_n(&nnx_pool.spin_ns, __ATOMIC_RELAXED)) {
                pthread_mutex_lock(&nnx_pool.mu);
                ++nnx_pool.sleepers;
                while ((g = __atomic_load_n(&nnx_pool.gen, __ATOMIC_ACQUIRE)) == seen)
                    pthread_cond_wait(&nnx_pool.wake, &nnx_pool.mu);
                --nnx_pool.sleepers;
                pthread_mutex_unlock(&nnx_pool.mu);
                break;
            }
        }
        seen = g;
        if (nnx_pool.stop) return NULL;
        i64 lo, hi;
        if (id < nnx_pool.parts) nnx_part(nnx_pool.n, nnx_pool.parts, id, &lo, &hi);
        else lo = hi = 0;
        if (lo < hi) nnx_pool.fn(nnx_pool.args, lo, hi, id);
        __atomic_fetch_sub(&nnx_pool.pending, 1, __ATOMIC_RELEASE);
    }
}

/* start a run: every worker takes its range of the task set in nnx_pool */
static void nnx_pool_start(void) {
    pthread_mutex_lock(&nnx_pool.mu);
    __atomic_store_n(&nnx_pool.pending, nnx_pool.workers, __ATOMIC_RELAXED);
    __atomic_fetch_add(&nnx_pool.gen, 1, __ATOMIC_RELEASE);
    if (nnx_pool.sleepers) pthread_cond_broadcast(&nnx_pool.wake);
    pthread_mutex_unlock(&nnx_pool.mu);
}

/* Wait for the workers: spin, then (past 50 us: a worker is not running, e.g. more threads than
 * cores) yield the core to it on each look. */
static void nnx_pool_wait(void) {
    const i64 t0 = nnx_now_ns();
    for (unsigned k = 1; __atomic_load_n(&nnx_pool.pending, __ATOMIC_ACQUIRE) != 0; ++k) {
        if (k < 256 || nnx_now_ns() - t0 < 50000) nnx_relax();
        else sched_yield();
    }
}

static void nnx_pool_stop_workers(void) {
    if (!nnx_pool.workers) return;
    nnx_pool.stop = 1;
    nnx_pool_start();
    for (int i = 0; i < nnx_pool.workers; ++i) pthread_join(nnx_pool.th[i], NULL);
    nnx_pool.stop = 0;
    nnx_pool.workers = 0;
}

static void nnx_pool_after_fork(void) {
    pthread_mutex_init(&nnx_pool.run, NULL);
    pthread_mutex_init(&nnx_pool.mu, NULL);
    pthread_cond_init(&nnx_pool.wake, NULL);
    nnx_pool.workers = nnx_pool.sleepers = nnx_pool.stop = 0;
    nnx_pool.pending = 0;
}

/* (run lock held) `want` workers running; 0 when none could be started */
static int nnx_pool_size(int want) {
    if (nnx_pool.workers == want) return want;
    nnx_pool_stop_workers();
    if (!nnx_pool.atfork) nnx_pool.atfork = pthread_atfork(NULL, NULL, nnx_pool_after_fork) == 0 ? 1 : -1;
    if (nnx_pool.atfork < 0) return 0;
    nnx_pool.born = nnx_pool.gen;
    for (int i = 0; i < want; ++i) {
        if (pthread_create(&nnx_pool.th[i], NULL, nnx_worker, (void*)(size_t)(i + 1)) != 0) {
            nnx_pool.workers = i;
            nnx_pool_stop_workers();
            return 0;
        }
        nnx_pool.workers = i + 1;
    }
    return want;
}

/* task(args, lo, hi) over [0, n) on `threads` threads (the caller and threads - 1 workers that
 * spin spin_us microseconds for the next task); one thread, n < 2, or the pool busy: on the caller. */
void nnx_pool_run(const void* task, const i64* args, i64 n, i64 threads, i64 spin_us) {
    const nnx_task fn = (nnx_task)task;
    if (threads > n) threads = n;
    if (threads > NNX_POOL_MAX + 1) threads = NNX_POOL_MAX + 1;
    if (threads < 2 || pthread_mutex_trylock(&nnx_pool.run) != 0) {
        if (n > 0) fn(args, 0, n, 0);
        return;
    }
    /* the pool keeps its size between runs; workers past the run's ranges take empty ones */
    if (nnx_pool.workers + 1 < threads && !nnx_pool_size((int)threads - 1)) {
        pthread_mutex_unlock(&nnx_pool.run);
        fn(args, 0, n, 0);
        return;
    }
    nnx_pool.fn = fn;
    nnx_pool.args = args;
    nnx_pool.n = n;
    nnx_pool.parts = threads;
    __atomic_store_n(&nnx_pool.spin_ns, spin_us * 1000, __ATOMIC_RELAXED);
    nnx_pool_start();
    i64 lo, hi;
    nnx_part(n, threads, 0, &lo, &hi);
    fn(args, lo, hi, 0);
    nnx_pool_wait();
    pthread_mutex_unlock(&nnx_pool.run);
}

/* Stop the workers (threads.set_num_threads with a smaller count, and the tests). */
void nnx_pool_shutdown(void) {
    pthread_mutex_lock(&nnx_pool.run);
    nnx_pool_stop_workers();
    pthread_mutex_unlock(&nnx_pool.run);
}

/* Started worker threads. */
i64 nnx_pool_workers(void) { return nnx_pool.workers; }
