//! The executor threads of a cluster node: plain threads that take jobs from a channel.
//!
//! A cluster node's transactions become runnable one by one as handovers arrive, so the
//! driver hands each to the pool as a job. Several nodes often share a host (shm), where
//! a work-stealing pool's idle threads spinning and yielding take the CPU the other nodes
//! need; these threads park on the channel instead.
//!
//! A thread stuck in a plugin call that the driver abandoned is written off
//! ([`Workers::write_off`]): a new thread takes its place, and the stuck one is never
//! joined.

use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in arrival order.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    receiver: Receiver<Job>,
    threads: Vec<JoinHandle<()>>,
    /// Threads started so far, for names.
    started: usize,
    /// Some thread was written off: dropping the workers must not join (it would wait for
    /// the stuck thread forever).
    written_off: bool,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (jobs, receiver): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let mut workers = Workers { jobs: Some(jobs), receiver, threads: Vec::new(), started: 0, written_off: false };
        for _ in 0..count.max(1) {
            workers.start_thread()?;
        }
        Ok(workers)
    }

    fn start_thread(&mut self) -> std::io::Result<()> {
        let receiver = self.receiver.clone();
        let thread =
            std::thread::Builder::new().name(format!("leasehold-executor-{}", self.started)).spawn(move || {
                while let Ok(job) = receiver.recv() {
                    job();
                }
            })?;
        self.started += 1;
        self.threads.push(thread);
        Ok(())
    }

    /// Replaces `count` threads that are stuck in abandoned plugin calls by new ones.
    pub fn write_off(&mut self, count: usize) -> std::io::Result<()> {
        self.written_off = true;
        for _ in 0..count {
            self.start_thread()?;
        }
        Ok(())
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let jobs = self.jobs.as_ref().expect("jobs are sent only while the workers run");
        if jobs.send(Box::new(job)).is_err() {
            panic!("executor threads ended while the driver runs");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the channel lets every thread finish its queue and return.
        drop(self.jobs.take());
        if self.written_off {
            return;
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
