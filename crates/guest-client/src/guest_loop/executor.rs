//! A tiny single-thread executor: tasks, a ready queue, std wakers.
//!
//! A guest has one thread and no async runtime (a guest links only what a guest needs),
//! so the loop carries its own: spawned futures live in a table on this thread (`Rc`,
//! `RefCell`), and a waker is an `Arc` (std's [`Wake`]) that pushes its task's id onto a
//! ready queue. The queue is the only shared-memory piece: wakers must be `Send + Sync`,
//! and a waker used from another thread still lands its task there. A `queued` flag per
//! task keeps one entry per wake-up however many times it is woken.
//!
//! The executor never decides when to wait for I/O: [`super::GuestLoop::block_on`] runs
//! what is ready and, when nothing is, asks the event source for the next event.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Names a task. Never reused, so a stale wake cannot run somebody else's task.
pub(crate) type TaskId = u64;

/// The future given to `block_on`; spawned tasks count from 1.
pub(crate) const MAIN: TaskId = 0;

/// Ids of tasks to poll, in wake order.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    ids: Mutex<VecDeque<TaskId>>,
    /// Signalled on every push: the loop waits here when it has no event source left
    /// (the transport broke) and only a wake from elsewhere can make progress.
    pushed: Condvar,
}

impl ReadyQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<TaskId>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, id: TaskId) {
        self.lock().push_back(id);
        self.pushed.notify_one();
    }

    fn take_all(&self) -> VecDeque<TaskId> {
        std::mem::take(&mut *self.lock())
    }

    fn push_front_all(&self, ids: impl DoubleEndedIterator<Item = TaskId>) {
        let mut queue = self.lock();
        for id in ids.rev() {
            queue.push_front(id);
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn wait_non_empty(&self) {
        let mut queue = self.lock();
        while queue.is_empty() {
            queue = self
                .pushed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A task's waker: queues the task once per wake-up.
pub(crate) struct TaskWaker {
    id: TaskId,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl TaskWaker {
    /// The task is about to be polled: a wake from now on queues it again.
    fn reset(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.id);
        }
    }
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    /// `None` while the task is being polled.
    future: Option<LocalFuture>,
    flag: Arc<TaskWaker>,
    waker: Waker,
}

/// Spawned tasks and the ready queue.
pub(crate) struct Executor {
    ready: Arc<ReadyQueue>,
    tasks: RefCell<HashMap<TaskId, Task>>,
    next_id: Cell<TaskId>,
    in_block_on: Cell<bool>,
}

impl Executor {
    pub fn new() -> Executor {
        Executor {
            ready: Arc::default(),
            tasks: RefCell::default(),
            next_id: Cell::new(MAIN + 1),
            in_block_on: Cell::new(false),
        }
    }

    fn waker_for(&self, id: TaskId) -> (Arc<TaskWaker>, Waker) {
        let flag = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(false),
            queue: Arc::clone(&self.ready),
        });
        (Arc::clone(&flag), Waker::from(flag))
    }

    /// Adds a task and queues it for a first poll.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let join = Rc::new(RefCell::new(JoinState {
            output: None,
            waiter: None,
        }));
        let completion = Rc::clone(&join);
        let task = async move {
            let output = future.await;
            let waiter = {
                let mut state = completion.borrow_mut();
                state.output = Some(output);
                state.waiter.take()
            };
            if let Some(waiter) = waiter {
                waiter.wake();
            }
        };
        let (flag, waker) = self.waker_for(id);
        self.tasks.borrow_mut().insert(
            id,
            Task {
                future: Some(Box::pin(task)),
                flag: Arc::clone(&flag),
                waker,
            },
        );
        flag.wake_by_ref();
        JoinHandle { state: join }
    }

    /// Marks the start of a `block_on`; the guard marks its end. Nested `block_on` would
    /// freeze the outer one's tasks, so it is refused.
    pub fn enter(&self) -> EnterGuard<'_> {
        assert!(
            !self.in_block_on.replace(true),
            "GuestLoop::block_on called from inside the loop (use spawn, or await the future)"
        );
        EnterGuard(self)
    }

    /// The waker of a `block_on`'s future, already queued for its first poll.
    pub fn main_waker(&self) -> (Arc<TaskWaker>, Waker) {
        let (flag, waker) = self.waker_for(MAIN);
        flag.wake_by_ref();
        (flag, waker)
    }

    /// Everything woken so far, in wake order.
    pub fn take_ready(&self) -> VecDeque<TaskId> {
        self.ready.take_all()
    }

    /// Puts back ids taken but not polled (their `queued` flags are still set).
    pub fn requeue(&self, ids: VecDeque<TaskId>) {
        self.ready.push_front_all(ids.into_iter());
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Blocks until some task is woken (from any thread).
    pub fn wait_for_wake(&self) {
        self.ready.wait_non_empty();
    }

    /// Polls the `block_on` future with its waker.
    pub fn poll_main<F: Future>(
        &self,
        flag: &TaskWaker,
        waker: &Waker,
        future: Pin<&mut F>,
    ) -> Poll<F::Output> {
        flag.reset();
        future.poll(&mut Context::from_waker(waker))
    }

    /// Polls a spawned task once; a finished task is removed. No borrow of the task table
    /// is held while the task runs (it may spawn, or drop handles that touch the loop).
    pub fn poll_task(&self, id: TaskId) {
        let (mut future, waker) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(&id) else {
                return; // finished already; a stale wake
            };
            let Some(future) = task.future.take() else {
                return;
            };
            task.flag.reset();
            (future, task.waker.clone())
        };
        match future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => {
                let task = self.tasks.borrow_mut().remove(&id);
                drop(task);
                drop(future);
            }
            Poll::Pending => {
                if let Some(task) = self.tasks.borrow_mut().get_mut(&id) {
                    task.future = Some(future);
                }
            }
        }
    }

    /// Number of spawned tasks not finished.
    pub fn task_count(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Drops every task (their handles close their sockets). Used when the loop is
    /// dropped: tasks hold handles that hold the loop, a cycle only this breaks.
    pub fn clear(&self) {
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
    }
}

pub(crate) struct EnterGuard<'a>(&'a Executor);

impl Drop for EnterGuard<'_> {
    fn drop(&mut self) {
        self.0.in_block_on.set(false);
    }
}

struct JoinState<T> {
    output: Option<T>,
    waiter: Option<Waker>,
}

/// Awaits a spawned task's output. Dropping it detaches the task (it keeps running).
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task finished (and its output was not taken yet).
    pub fn is_finished(&self) -> bool {
        self.state.borrow().output.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        match state.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                state.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
