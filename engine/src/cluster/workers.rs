//! The executor threads of a cluster node: plain threads that take jobs from a channel.
//!
//! A cluster node's transactions become runnable one by one as handovers arrive, so the
//! driver hands each to the pool as a job. Several nodes often share a host (shm), where
//! a work-stealing pool's idle threads spinning and yielding take the CPU the other nodes
//! need; these threads park on the channel instead.

use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in arrival order.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (jobs, receiver): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let threads = (0..count.max(1))
            .map(|index| {
                let receiver = receiver.clone();
                std::thread::Builder::new().name(format!("leasehold-executor-{index}")).spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        job();
                    }
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Workers { jobs: Some(jobs), threads })
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
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
