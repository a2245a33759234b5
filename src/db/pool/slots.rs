//! The pool's slots: who may hold a connection, who opens one, who waits —
//! SQLAlchemy's `QueuePool` counting, on top of a connection store that only
//! says how many connections it has and how many are idle ([`Store`]).
//!
//! There are `pool_max` slots (`DB_POOL_SIZE + DB_MAX_OVERFLOW`). Each is in
//! exactly one of these places, at every moment:
//!
//! * **free** — a permit of the `turns` semaphore;
//! * **claimed** — a [`Turn`]: a request (or the keeper) that holds a
//!   connection, is about to take an idle one, or is opening one;
//! * **vacant** — freed by a connection attempt that failed. A vacant slot
//!   is taken by the next *arrival* that finds no free one (after
//!   [`VACANT_PAUSE`]), never by a request already waiting: QueuePool
//!   decrements its overflow when a connect fails and wakes nobody, so a
//!   waiter waits for a *returned connection*, not for the right to open one;
//! * **withheld** — kept out of use by the runtime limit ([`Slots::set_limit`]).
//!
//! `free + claimed + vacant + withheld = pool_max` always holds. A claim ends
//! in one of two ways: [`Turn`] dropped after its connection went back to the
//! store (the slot becomes free again, which hands it to the first waiter,
//! FIFO) or, without a connection (a failed attempt, [`Turn::failed`]), the
//! slot becomes vacant and wakes nobody — unless no claim is left at all:
//! then no connection will come back, and waiters take vacant slots. A waiter therefore wakes only when a connection came
//! back — or, rarely, when a claim ended without one (an abandoned request);
//! either way it then takes an idle connection or opens one like anybody.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so that the state machine's tests can pause time.
use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the slots need to know of the connection store (sqlx's pool).
pub trait Store: Send + Sync {
    /// Connections open or being opened.
    fn size(&self) -> u32;
    /// Connections idle in the store, ready to be handed out.
    fn idle(&self) -> u32;
}

impl Store for sqlx::PgPool {
    fn size(&self) -> u32 {
        sqlx::PgPool::size(self)
    }

    /// sqlx's idle count briefly wraps below zero while a connection is
    /// handed over (its counter is decremented before it is incremented).
    fn idle(&self) -> u32 {
        let open = sqlx::PgPool::size(self);
        u32::try_from(self.num_idle()).map_or(0, |idle| idle.min(open))
    }
}

/// The slow-path counts, changed together under one lock.
#[derive(Debug, Default)]
struct Parked {
    vacant: u32,
    withheld: u32,
    /// When a slot last went vacant.
    vacated_at: Option<Instant>,
}

impl Parked {
    /// Every slot is vacant or withheld: none free, none claimed.
    fn holds_all(&self, pool_max: u32) -> bool {
        self.vacant + self.withheld == pool_max
    }
}

/// How long after a failed attempt its slot stays out of reach of new
/// arrivals. A burst's requests reach the service over tens of milliseconds
/// while PostgreSQL refuses an attempt in a few: without the pause, a
/// request arriving just after a refusal would take that slot and be
/// refused too, where one arriving just before waits and is served — the
/// refusal count would depend on the arrival spread. With it, a burst is
/// refused exactly `min(requests, pool max) − granted` times, and the
/// service does not hammer a full server with a new attempt per arrival.
pub const VACANT_PAUSE: Duration = Duration::from_secs(1);

pub struct Slots {
    store: Box<dyn Store>,
    turns: Arc<Semaphore>,
    parked: Mutex<Parked>,
    /// How many slots the runtime limit wants withheld (`pool_max − limit`).
    /// Read on every release, so it lives outside the lock: 0 means "no
    /// limit", and a release then never takes the lock.
    withhold_target: AtomicU32,
    /// Turns alive ([`Turn`]): each holds a connection, is about to take or
    /// open one, or is giving one back. A claim ends when its slot is freed.
    claims: AtomicUsize,
    /// Requests waiting for a connection to come back, and since when.
    waiters: super::waiters::Waiters,
    /// Told when every slot has gone vacant: waiters then take vacant slots.
    all_gone: tokio::sync::Notify,
    /// Connections on loan to requests.
    in_use: AtomicUsize,
    pool_size: u32,
    pool_max: u32,
    /// `DB_OVERFLOW_IDLE_TIMEOUT = 0`: close surplus connections when returned.
    close_surplus_on_return: bool,
}

/// How a turn was had: it matters for nothing but tests and spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// A free slot, at once.
    Free,
    /// A slot a failed attempt left vacant, at once.
    Vacant,
    /// After waiting for a connection to come back.
    Waited,
}

impl Slots {
    pub fn new(
        store: Box<dyn Store>,
        pool_size: u32,
        pool_max: u32,
        close_surplus_on_return: bool,
    ) -> Slots {
        Slots {
            store,
            turns: Arc::new(Semaphore::new(pool_max as usize)),
            parked: Mutex::new(Parked::default()),
            withhold_target: AtomicU32::new(0),
            claims: AtomicUsize::new(0),
            waiters: Default::default(),
            all_gone: tokio::sync::Notify::new(),
            in_use: AtomicUsize::new(0),
            pool_size,
            pool_max,
            close_surplus_on_return,
        }
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        // Counts only: a panic elsewhere leaves them whole.
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot at once — free, else vacant — without waiting; `None` when
    /// every slot is claimed or withheld (the pool is at its max).
    pub fn try_turn(self: &Arc<Self>) -> Option<Turn> {
        if let Ok(permit) = self.turns.clone().try_acquire_owned() {
            return Some(self.claim(Some(permit), Got::Free));
        }
        let mut parked = self.parked();
        let paused = parked
            .vacated_at
            .is_some_and(|at| at.elapsed() < VACANT_PAUSE);
        if parked.vacant == 0 || paused {
            return None;
        }
        parked.vacant -= 1;
        drop(parked);
        Some(self.claim(None, Got::Vacant))
    }

    /// A slot: at once if there is one, else after waiting (FIFO) for a
    /// connection to come back. `None` once the pool is closed. Cancel-safe:
    /// dropped while waiting, it leaves the counts as they were.
    pub async fn turn(self: &Arc<Self>) -> Option<Turn> {
        if let Some(turn) = self.try_turn() {
            return Some(turn);
        }
        let _waiting = self.waiters.enter();
        let permit = self.turns.clone().acquire_owned();
        tokio::pin!(permit);
        loop {
            // Registered before the check, so that a last claim ending in
            // between is not missed.
            let all_gone = self.all_gone.notified();
            tokio::pin!(all_gone);
            all_gone.as_mut().enable();
            if let Some(turn) = self.vacant_when_nothing_comes_back() {
                return Some(turn);
            }
            tokio::select! {
                permit = &mut permit => return Some(self.claim(Some(permit.ok()?), Got::Waited)),
                _ = all_gone => {}
            }
        }
    }

    /// A waiter waits for a returned connection; but when every slot is
    /// vacant (or withheld) — none free, none claimed — none will come back. A vacant slot is then taken at once, pause or
    /// not (the pause only keeps a burst's late arrivals from retrying a
    /// full server while connections are still in use).
    fn vacant_when_nothing_comes_back(self: &Arc<Self>) -> Option<Turn> {
        let mut parked = self.parked();
        if parked.vacant == 0 || !parked.holds_all(self.pool_max) {
            return None;
        }
        parked.vacant -= 1;
        drop(parked);
        Some(self.claim(None, Got::Vacant))
    }

    fn claim(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>, got: Got) -> Turn {
        self.claims.fetch_add(1, Ordering::Relaxed);
        Turn {
            permit,
            slots: self.clone(),
            holding: false,
            pauses: false,
            keeper: false,
            got,
        }
    }

    /// Ends a claim whose connection went back (or never came): the slot is
    /// free again — unless the runtime limit wants it withheld.
    fn release(&self, permit: Option<OwnedSemaphorePermit>) {
        if self.withhold_target.load(Ordering::Relaxed) > 0 {
            let mut parked = self.parked();
            if parked.withheld < self.withhold_target.load(Ordering::Relaxed) {
                parked.withheld += 1;
                if let Some(p) = permit {
                    p.forget();
                }
                return;
            }
        }
        match permit {
            Some(p) => drop(p),
            None => self.turns.add_permits(1),
        }
    }

    /// Ends a claim whose connection attempt failed: the slot becomes vacant
    /// and wakes nobody (see the module doc).
    fn vacate(&self, permit: Option<OwnedSemaphorePermit>, pause: bool) {
        if let Some(p) = permit {
            p.forget();
        }
        let mut parked = self.parked();
        if parked.withheld < self.withhold_target.load(Ordering::Relaxed) {
            parked.withheld += 1;
        } else {
            parked.vacant += 1;
            if pause {
                parked.vacated_at = Some(Instant::now());
            }
        }
        if parked.holds_all(self.pool_max) {
            self.all_gone.notify_waiters();
        }
    }

    /// Lowers (or with `None`, lifts) the runtime limit on slots in use.
    /// Slots free or vacant now are withheld at once; the rest as claims end.
    /// `limit` is clamped to 1..=pool_max.
    pub fn set_limit(&self, limit: Option<u32>) {
        let limit = limit.map_or(self.pool_max, |l| l.clamp(1, self.pool_max));
        let target = self.pool_max - limit;
        let mut parked = self.parked();
        self.withhold_target.store(target, Ordering::Relaxed);
        while parked.withheld > target {
            parked.withheld -= 1;
            self.turns.add_permits(1);
        }
        let from_vacant = (target - parked.withheld).min(parked.vacant);
        parked.vacant -= from_vacant;
        parked.withheld += from_vacant;
        let wanted = (target - parked.withheld) as usize;
        parked.withheld += self.turns.forget_permits(wanted) as u32;
    }

    /// The runtime limit on slots in use (`pool_max` when none is set).
    pub fn limit(&self) -> u32 {
        self.pool_max - self.withhold_target.load(Ordering::Relaxed)
    }

    /// Whether a claim must open a connection: fewer connections are open
    /// (or being opened) than there are claims. Every open connection is
    /// either idle or claimed — a slot is freed only once its connection is
    /// back in the store — so this counts exactly, however far the store's
    /// idle count lags behind a burst of claims on their way to the idle
    /// connections. At the pool's max it is never true.
    pub fn must_open(&self) -> bool {
        (self.store.size() as usize) < self.claims.load(Ordering::Relaxed)
    }

    /// Connections idle in the store.
    pub fn idle(&self) -> u32 {
        self.store.idle()
    }

    /// Connections open or being opened.
    pub fn open(&self) -> u32 {
        self.store.size()
    }

    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed) as u32
    }

    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// Requests waiting for a connection to come back.
    pub fn queued(&self) -> u32 {
        self.waiters.count() as u32
    }

    /// Who waits, and since when (for `/pool` and `/metrics`).
    pub fn waiters(&self) -> &super::waiters::Waiters {
        &self.waiters
    }

    /// Connections no claim holds, is about to take or is giving back.
    pub fn unclaimed(&self) -> u32 {
        let claims = self.claims.load(Ordering::Relaxed) as u32;
        self.store.size().saturating_sub(claims)
    }

    /// Slots vacated by failed attempts and not yet taken again.
    pub fn vacant(&self) -> u32 {
        self.parked().vacant
    }

    pub fn lease_started(&self) {
        self.in_use.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lease_ended(&self) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    /// Closing the pool: every waiter gets `None`.
    pub fn close(&self) {
        self.turns.close();
    }
}

/// QueuePool's rule for a connection being given back: it stays while fewer
/// than `pool_size` connections sit idle, and is closed otherwise (while
/// requests wait for one it always stays: it is theirs). Two returns at the
/// same instant may both stay; the trimmer closes what surplus lasts.
pub fn keep_on_return(idle_now: u32, pool_size: u32) -> bool {
    idle_now < pool_size
}

/// One slot, claimed: held until the connection is back in the store (or
/// the attempt to open one failed, [`Turn::failed`]).
pub struct Turn {
    /// `None` for a slot taken from the vacant ones.
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,

    /// A connection was had on this turn: when the turn ends, the slot is
    /// freed (the connection came back, or was closed and may be replaced);
    /// without one, the slot goes vacant.
    holding: bool,
    /// Its connection attempt failed, and the vacant slot it leaves rests
    /// ([`VACANT_PAUSE`]): set by [`Turn::failed`] on requests' attempts;
    /// not for the keeper, whose retries are no burst, nor for a request
    /// that was abandoned.
    pauses: bool,
    keeper: bool,
    got: Got,
}

impl Turn {
    /// How this turn was had.
    pub fn got(&self) -> Got {
        self.got
    }

    /// The turn's connection is on its way back: keep it in the store?
    /// Ends the claim atomically, so that two connections given back at the
    /// same moment see different counts and cannot both stay as surplus.
    /// The slot itself is freed when the turn is dropped, once the
    /// connection is back.
    pub fn give_back_and_keep(&self) -> bool {
        let slots = &self.slots;
        !slots.close_surplus_on_return
            || slots.queued() > 0
            || keep_on_return(slots.store.idle(), slots.pool_size)
    }

    /// A turn of the keeper's: its failures do not pause the vacant slots.
    pub fn for_keeper(mut self) -> Turn {
        self.keeper = true;
        self
    }

    /// This request's connection attempt failed (refused, or the database
    /// away): the slot goes vacant and rests (see [`VACANT_PAUSE`]).
    pub fn failed(mut self) {
        self.pauses = !self.keeper;
    }

    /// A connection is had on this turn (its slot is freed, not vacated, when the turn ends).
    pub fn hold(&mut self) {
        self.holding = true;
    }

    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.slots.claims.fetch_sub(1, Ordering::Relaxed);
        if self.holding {
            self.slots.release(self.permit.take());
        } else {
            self.slots.vacate(self.permit.take(), self.pauses);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// A store whose counts the test sets.
    #[derive(Default)]
    struct Fake {
        size: AtomicU32,
        idle: AtomicU32,
    }

    impl Store for Arc<Fake> {
        fn size(&self) -> u32 {
            self.size.load(Ordering::Relaxed)
        }
        fn idle(&self) -> u32 {
            self.idle.load(Ordering::Relaxed)
        }
    }

    /// A turn that got its connection.
    fn held(slots: &Arc<Slots>) -> Turn {
        let mut turn = slots.try_turn().expect("a slot at once");
        turn.hold();
        turn
    }

    fn slots(size: u32, max: u32) -> (Arc<Slots>, Arc<Fake>) {
        let store = Arc::new(Fake::default());
        let slots = Arc::new(Slots::new(Box::new(store.clone()), size, max, true));
        (slots, store)
    }

    /// Spawns `n` waiters, each reporting when it got a turn.
    fn waiters(
        slots: &Arc<Slots>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Option<(Turn, tokio::time::Instant)>>> {
        (0..n)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    let mut turn = slots.turn().await?;
                    turn.hold();
                    Some((turn, tokio::time::Instant::now()))
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_attempt_wakes_no_waiter_a_returned_connection_does() {
        // Pool 3 + 3; the server grants 4. The burst of 10: six open (two
        // refused), four wait.
        let (slots, _store) = slots(3, 6);
        let mut openers: Vec<Turn> = (0..6).map(|_| slots.try_turn().unwrap()).collect();
        assert!(openers.iter().all(|t| t.got() == Got::Free));
        assert!(slots.try_turn().is_none(), "the pool is at its max");
        let waiting = waiters(&slots, 4);
        tokio::task::yield_now().await;

        // Two attempts refused: their slots go vacant, nobody wakes.
        openers.pop().unwrap().failed();
        openers.pop().unwrap().failed();
        openers.iter_mut().for_each(Turn::hold);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(waiting.iter().all(|w| !w.is_finished()));
        assert_eq!(slots.vacant(), 2);

        // One connection comes back: exactly the first waiter wakes.
        drop(openers.pop());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let done: Vec<bool> = waiting.iter().map(|w| w.is_finished()).collect();
        assert_eq!(done, [true, false, false, false]);
        assert_eq!(slots.vacant(), 2, "waking a waiter takes no vacant slot");
    }

    #[tokio::test(start_paused = true)]
    async fn an_arrival_takes_a_vacant_slot_before_waiting() {
        let (slots, _store) = slots(1, 2);
        let held = held(&slots);
        slots.try_turn().unwrap().failed();
        assert!(slots.try_turn().is_none(), "paused just after the failure");
        tokio::time::sleep(VACANT_PAUSE).await;
        let mut again = slots.try_turn().expect("the vacant slot");
        assert_eq!(again.got(), Got::Vacant);
        assert!(slots.try_turn().is_none());
        // Its connection given back, a vacant-born slot becomes free.
        again.hold();
        drop(again);
        assert_eq!(slots.try_turn().unwrap().got(), Got::Free);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn waves_of_returns_serve_the_waiters_in_arrival_order() {
        // The README's case in small: pool 2 + 2, server grants 3; burst of
        // 8 → 1 refused, 3 + 3 + 1 served in waves.
        let (slots, _store) = slots(2, 4);
        let mut first: Vec<Turn> = (0..4).map(|_| slots.try_turn().unwrap()).collect();
        let waiting = waiters(&slots, 4);
        tokio::task::yield_now().await;
        first.pop().unwrap().failed(); // refused
        first.iter_mut().for_each(Turn::hold);
        let mut wave = 1;
        let mut served = vec![first.len()];
        let mut pending = waiting;
        let mut holders = first;
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            holders.clear(); // the wave's connections come back
            tokio::time::sleep(Duration::from_millis(1)).await;
            let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|w| w.is_finished());
            for w in done {
                holders.push(w.await.unwrap().unwrap().0);
            }
            served.push(holders.len());
            pending = rest;
            wave += 1;
            assert!(wave < 10);
        }
        assert_eq!(served, [3, 3, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_withholds_slots_and_gives_them_back() {
        let (slots, _store) = slots(2, 4);
        let a = held(&slots);
        let b = held(&slots);
        slots.set_limit(Some(1));
        assert_eq!(slots.limit(), 1);
        assert!(
            slots.try_turn().is_none(),
            "two free slots withheld at once"
        );
        drop(a); // withheld as it comes back
        assert!(slots.try_turn().is_none());
        drop(b); // now one in use is allowed
        let c = held(&slots);
        assert!(slots.try_turn().is_none());
        slots.set_limit(None);
        assert_eq!(slots.limit(), 4);
        let more: Vec<Turn> = (0..3).map(|_| held(&slots)).collect();
        assert!(slots.try_turn().is_none());
        drop((c, more));
        // Back to four free slots: the counts add up.
        let all: Vec<Turn> = (0..4).map(|_| held(&slots)).collect();
        assert!(slots.try_turn().is_none());
        drop(all);
    }

    #[tokio::test(start_paused = true)]
    async fn when_no_connection_can_come_back_a_waiter_takes_a_vacant_slot() {
        // Pool 0 + 2: both attempts fail while a request waits. Nothing is
        // held, so nothing will be returned: the waiter must not sit out
        // its pool timeout, pause or not.
        let (slots, _store) = slots(0, 2);
        let (a, b) = (slots.try_turn().unwrap(), slots.try_turn().unwrap());
        let mut waiting = waiters(&slots, 1);
        tokio::task::yield_now().await;
        a.failed();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting[0].is_finished(), "a claim is still alive");
        b.failed();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (turn, _) = waiting.pop().unwrap().await.unwrap().unwrap();
        assert_eq!(turn.got(), Got::Vacant);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_leaves_the_counts_whole() {
        let (slots, _store) = slots(1, 1);
        let held = held(&slots);
        let waiter = waiters(&slots, 1).pop().unwrap();
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert!(slots.try_turn().is_some());
    }

    #[test]
    fn a_claim_opens_only_when_connections_are_fewer_than_claims() {
        let (slots, store) = slots(2, 4);
        store.size.store(2, Ordering::Relaxed);
        let first: Vec<Turn> = (0..2).map(|_| slots.try_turn().unwrap()).collect();
        assert!(!slots.must_open(), "two claims, two connections");
        let third = slots.try_turn().unwrap();
        assert!(slots.must_open(), "the third claim has none");
        store.size.store(3, Ordering::Relaxed); // it is being opened
        assert!(!slots.must_open());
        drop((first, third));
    }

    #[test]
    fn returned_connections_fill_the_pool_then_close() {
        // Pool 10 + 10, 20 in use, nobody waiting: the leases end one by
        // one. The first ten back are kept, the rest closed.
        let mut idle = 0;
        let mut closed = 0;
        for _ in 0..20 {
            if keep_on_return(idle, 10) {
                idle += 1;
            } else {
                closed += 1;
            }
        }
        assert_eq!((idle, closed), (10, 10));
        // Pool 0 + 5: nothing is ever kept idle.
        assert!(!keep_on_return(0, 0));
    }
}
