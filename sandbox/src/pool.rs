//! Admission control: a fixed number of runs execute at once, a bounded number wait, and the
//! rest are turned away with 503 so overload never turns into unbounded latency or memory.
//!
//! Runs execute on guest threads (big native stacks) that are kept between runs: spawning one
//! per run cost more than a whole trivial run.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tokio::sync::{Semaphore, oneshot};
use tracing::Span;

use crate::error::ApiError;
use crate::guest::CancelFlag;
use crate::runner::spawn_guest_thread;

/// Bounded pool of guest runs.
pub struct RunPool {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    threads: GuestThreads,
}

/// One run's work, as handed to a guest thread.
type Job = Box<dyn FnOnce() + Send>;

/// Up to `max` guest threads, started as runs first need them, each taking jobs from one queue
/// until the pool is dropped. A job is queued only once its run holds a slot, so with `max`
/// equal to the number of slots a job never waits for longer than a thread takes to pick it up.
struct GuestThreads {
    max: usize,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    // Guards the queue's sending side and the count of threads started.
    queue: Mutex<(mpsc::Sender<Job>, usize)>,
}

impl GuestThreads {
    fn new(max: usize) -> Self {
        let (sender, receiver) = mpsc::channel();
        GuestThreads {
            max,
            jobs: Arc::new(Mutex::new(receiver)),
            queue: Mutex::new((sender, 0)),
        }
    }

    /// Queues `job`, first starting another thread if fewer than `max` exist.
    fn submit(&self, job: Job) -> std::io::Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let (sender, started) = &mut *queue;
        if *started < self.max {
            let jobs = self.jobs.clone();
            spawn_guest_thread(move || take_jobs(&jobs))?;
            *started += 1;
        }
        sender
            .send(job)
            .map_err(|_| std::io::Error::other("guest threads are gone"))
    }
}

/// A guest thread's life: run jobs until the queue's sending side is dropped with the pool.
fn take_jobs(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(mpsc::RecvError) => return,
        };
        // A run that panics must not take the thread with it. Its slot and its result channel
        // are dropped while unwinding, so its caller hears that it ended without a result.
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Holds one place (running or waiting) in the pool; released on drop.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Cancels the run if the future awaiting it is dropped (the HTTP caller went away).
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl RunPool {
    /// A pool running `concurrency` guests at once with `queue` more allowed to wait.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        RunPool {
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency + queue,
            threads: GuestThreads::new(concurrency),
        }
    }

    /// Runs admitted or waiting right now.
    pub fn busy(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Runs `work` on a guest thread once a slot is free, or fails with
    /// `Unavailable` at once if the pool and its queue are full.
    ///
    /// Dropping the returned future cancels the run; its slot is released only when the guest
    /// thread has actually finished, so an abandoned run cannot let more guests in than allowed.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&CancelFlag) -> T + Send + 'static,
        T: Send + 'static,
    {
        let admission = self.admit().ok_or(ApiError::Unavailable)?;
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("run pool closed".into()))?;
        let cancel = CancelFlag::default();
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (done, result) = oneshot::channel();
        let span = Span::current();
        self.threads
            .submit(Box::new(move || {
                let output = span.in_scope(|| work(&cancel));
                // Free the slot before answering, so a caller that sends its next request as
                // soon as it has this answer finds the slot free.
                drop(permit);
                drop(admission);
                // The receiver is gone if the caller was; the result is simply discarded then.
                let _ = done.send(output);
            }))
            .map_err(|e| ApiError::Internal(format!("starting a guest thread: {e}")))?;
        result
            .await
            .map_err(|_| ApiError::Internal("guest thread ended without a result".into()))
    }

    fn admit(&self) -> Option<Admission> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Admission(self.admitted.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn full_pool_refuses_and_frees_slots_afterwards() {
        let pool = Arc::new(RunPool::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let blocker = |wait: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>| {
            move |_: &CancelFlag| {
                wait.lock().unwrap().recv().unwrap();
            }
        };
        let first = tokio::spawn({
            let pool = pool.clone();
            let work = blocker(wait.clone());
            async move { pool.run(work).await }
        });
        let second = tokio::spawn({
            let pool = pool.clone();
            let work = blocker(wait.clone());
            async move { pool.run(work).await }
        });
        while pool.busy() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(pool.run(|_| ()).await, Err(ApiError::Unavailable)));
        release.send(()).unwrap();
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(pool.busy(), 0);
        pool.run(|_| ()).await.unwrap();
    }

    #[tokio::test]
    async fn threads_are_reused_and_survive_a_panicking_run() {
        let pool = RunPool::new(1, 0);
        let first = pool.run(|_| std::thread::current().id()).await.unwrap();
        let failed = pool.run(|_| -> () { panic!("a run failed") }).await;
        assert!(matches!(failed, Err(ApiError::Internal(_))));
        assert_eq!(pool.busy(), 0);
        let after = pool.run(|_| std::thread::current().id()).await.unwrap();
        assert_eq!(first, after);
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_work() {
        let pool = Arc::new(RunPool::new(1, 0));
        let task = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(|cancel: &CancelFlag| {
                    while !cancel.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .await
            }
        });
        while pool.busy() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        for _ in 0..200 {
            if pool.busy() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the slot of a dropped run was never released");
    }
}
