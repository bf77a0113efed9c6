//! openraft's runtime on glommio: the Raft tasks of a group run on the shard
//! that created it (`spawn` is `spawn_local`), with glommio's timers. The
//! channels are runtime-agnostic (flume, see, futures). Checked by openraft's
//! runtime conformance suite (`tests/cluster/conformance.rs`).
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use openraft::async_runtime::{
    mpsc::{Mpsc, MpscReceiver, MpscSender, MpscWeakSender, SendError, TryRecvError},
    mutex::Mutex,
    oneshot::{Oneshot, OneshotSender},
    watch::{RecvError, Watch, WatchReceiver, WatchSender},
};
use openraft::{AsyncRuntime, OptionalSend, OptionalSync};

pub struct GlommioRuntime {
    ex: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GlommioRuntime")
    }
}

#[derive(Debug)]
pub struct JoinError;
impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("glommio task cancelled")
    }
}

/// Detached glommio task: dropping it does NOT cancel the task (openraft drops handles).
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);
impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|o| o.ok_or(JoinError))
    }
}

pub struct Sleep(glommio::timer::Timer);
impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;
impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

pin_project_lite::pin_project! {
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        timer: glommio::timer::Timer,
    }
}
impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        JoinHandle(glommio::spawn_local(future).detach())
    }
    fn sleep(d: Duration) -> Sleep {
        Sleep(glommio::timer::Timer::new(d))
    }
    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep(glommio::timer::Timer::new(until(deadline)))
    }
    fn timeout<R, F: Future<Output = R> + OptionalSend>(d: Duration, fut: F) -> Timeout<F> {
        Timeout {
            fut,
            timer: glommio::timer::Timer::new(d),
        }
    }
    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Instant, fut: F) -> Timeout<F> {
        Timeout {
            fut,
            timer: glommio::timer::Timer::new(until(deadline)),
        }
    }
    fn is_panic(_: &JoinError) -> bool {
        false
    }
    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    type Mpsc = FlumeMpsc;
    type Watch = SeeWatch;
    type Oneshot = FuturesOneshot;
    type Mutex<T: OptionalSend + 'static> = FuturesMutex<T>;

    fn new(_threads: usize) -> Self {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("glommio executor");
        GlommioRuntime { ex }
    }
    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.ex.run(future)
    }
}

// ---------------- mpsc (flume, as openraft-rt-compio does) ----------------
pub struct FlumeMpsc;
pub struct FlumeSender<T>(flume::Sender<T>);
pub struct FlumeWeakSender<T>(flume::WeakSender<T>);
pub struct FlumeReceiver<T>(flume::Receiver<T>);
impl<T> Clone for FlumeSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
impl<T> Clone for FlumeWeakSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
impl Mpsc for FlumeMpsc {
    type Sender<T: OptionalSend> = FlumeSender<T>;
    type Receiver<T: OptionalSend> = FlumeReceiver<T>;
    type WeakSender<T: OptionalSend> = FlumeWeakSender<T>;
    fn channel<T: OptionalSend>(buffer: usize) -> (FlumeSender<T>, FlumeReceiver<T>) {
        let (tx, rx) = flume::bounded(buffer);
        (FlumeSender(tx), FlumeReceiver(rx))
    }
}
impl<T: OptionalSend> MpscSender<FlumeMpsc, T> for FlumeSender<T> {
    async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.0
            .send_async(msg)
            .await
            .map_err(|e| SendError(e.into_inner()))
    }
    fn downgrade(&self) -> FlumeWeakSender<T> {
        FlumeWeakSender(self.0.downgrade())
    }
}
impl<T: OptionalSend> MpscWeakSender<FlumeMpsc, T> for FlumeWeakSender<T> {
    fn upgrade(&self) -> Option<FlumeSender<T>> {
        self.0.upgrade().map(FlumeSender)
    }
}
impl<T> MpscReceiver<T> for FlumeReceiver<T> {
    async fn recv(&mut self) -> Option<T> {
        self.0.recv_async().await.ok()
    }
    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            flume::TryRecvError::Empty => TryRecvError::Empty,
            flume::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

// ---------------- oneshot (futures) ----------------
pub struct FuturesOneshot;
pub struct FuturesOneshotSender<T>(futures::channel::oneshot::Sender<T>);
impl Oneshot for FuturesOneshot {
    type Sender<T: OptionalSend> = FuturesOneshotSender<T>;
    type Receiver<T: OptionalSend> = futures::channel::oneshot::Receiver<T>;
    type ReceiverError = futures::channel::oneshot::Canceled;
    fn channel<T: OptionalSend>() -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = futures::channel::oneshot::channel();
        (FuturesOneshotSender(tx), rx)
    }
}
impl<T: OptionalSend> OneshotSender<T> for FuturesOneshotSender<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

// ---------------- mutex (futures) ----------------
pub struct FuturesMutex<T>(futures::lock::Mutex<T>);
impl<T: OptionalSend + 'static> Mutex<T> for FuturesMutex<T> {
    type Guard<'a> = futures::lock::MutexGuard<'a, T>;
    fn new(v: T) -> Self {
        Self(futures::lock::Mutex::new(v))
    }
    fn lock(&self) -> impl Future<Output = Self::Guard<'_>> + OptionalSend {
        self.0.lock()
    }
}

// ---------------- watch (see::unsync, as openraft-rt-compio does) ----------------
pub struct SeeWatch;
pub struct SeeSender<T>(see::unsync::Sender<T>);
pub struct SeeReceiver<T>(see::unsync::Receiver<T>);
pub struct SeeRef<'a, T>(see::unsync::Guard<'a, T>);
impl Watch for SeeWatch {
    type Sender<T: OptionalSend + OptionalSync> = SeeSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = SeeReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = SeeRef<'a, T>;
    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (SeeSender<T>, SeeReceiver<T>) {
        let (tx, rx) = see::unsync::channel(init);
        (SeeSender(tx), SeeReceiver(rx))
    }
}
impl<T> Clone for SeeSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
impl<T> Clone for SeeReceiver<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}
impl<T: OptionalSend + OptionalSync> WatchSender<SeeWatch, T> for SeeSender<T> {
    fn send(&self, value: T) -> Result<(), openraft::async_runtime::watch::SendError<T>> {
        self.0.send(value).map_err(|e| match e {
            see::error::SendError::ChannelClosed(v) => openraft::async_runtime::watch::SendError(v),
        })
    }
    fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        self.0.send_if_modified(modify)
    }
    fn borrow_watched(&self) -> SeeRef<'_, T> {
        SeeRef(self.0.borrow())
    }
    fn subscribe(&self) -> SeeReceiver<T> {
        SeeReceiver(self.0.subscribe())
    }
}
impl<T: OptionalSend + OptionalSync> WatchReceiver<SeeWatch, T> for SeeReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        self.0.changed().await.map_err(|_| RecvError(()))?;
        self.0.mark_unchanged();
        Ok(())
    }
    fn borrow_watched(&self) -> SeeRef<'_, T> {
        SeeRef(self.0.borrow())
    }
    fn borrow_and_update(&mut self) -> SeeRef<'_, T> {
        SeeRef(self.0.borrow_and_update())
    }
}
impl<T> Deref for SeeRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.deref()
    }
}
