//! Guest sleeps that respect the run's timeout and cancellation.
//!
//! The epoch deadline only fires while the guest executes WebAssembly; a guest blocked in
//! WASI `poll_oneoff` on a long timer would otherwise hold its slot far past its timeout. So
//! `poll_oneoff` is shadowed: a wait made only of relative clock timers is slept here, in short
//! slices that check the run's deadline and cancel flag. Other waits (file descriptors, absolute
//! timers) go to wasmtime-wasi's own implementation; in this sandbox a descriptor never blocks
//! (stdin is in memory, output is always writable), so only those timers can still wait long.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Caller, Engine, Extern, Linker, Trap, Val};

use crate::guest::RunState;

const MODULE: &str = "wasi_snapshot_preview1";
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const ERRNO_FAULT: i32 = 21;

/// Longest uninterrupted nap; bounds how late a timeout or cancellation is noticed.
const SLICE: Duration = Duration::from_millis(10);

/// Replaces `poll_oneoff` in `linker`, which already holds the WASI preview1 functions.
pub fn shadow_poll_oneoff(engine: &Engine, linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    let mut original = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut original, |state: &mut RunState| &mut state.wasi)?;
    let original = Arc::new(original);
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        move |mut caller: Caller<'_, RunState>, subs: i32, events: i32, n: i32, nevents: i32| {
            let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
                return Ok(ERRNO_FAULT);
            };
            let timers = {
                let data = memory.data(&caller);
                relative_timers(data, subs as u32 as usize, n as u32 as usize)
            };
            let Some(timers) = timers else {
                let poll = original
                    .get(&mut caller, MODULE, "poll_oneoff")?
                    .into_func()
                    .expect("wasmtime-wasi defines poll_oneoff as a function");
                let args = [subs, events, n, nevents].map(Val::I32);
                let mut errno = [Val::I32(0)];
                poll.call(&mut caller, &args, &mut errno)?;
                return Ok(errno[0].unwrap_i32());
            };
            let shortest = timers.iter().map(|t| t.timeout_ns).min().unwrap_or(0);
            sleep_unless_stopped(&mut caller, Duration::from_nanos(shortest))?;
            let fired: Vec<&Timer> = timers.iter().filter(|t| t.timeout_ns == shortest).collect();
            let data = memory.data_mut(&mut caller);
            Ok(write_events(
                data,
                events as u32 as usize,
                nevents as u32 as usize,
                &fired,
            ))
        },
    )?;
    Ok(())
}

struct Timer {
    userdata: u64,
    timeout_ns: u64,
}

/// The subscriptions if every one of them is a relative clock timer, else `None`.
fn relative_timers(memory: &[u8], at: usize, count: usize) -> Option<Vec<Timer>> {
    if count == 0 {
        return None;
    }
    let bytes = memory.get(at..at.checked_add(count.checked_mul(SUBSCRIPTION_SIZE)?)?)?;
    bytes
        .chunks_exact(SUBSCRIPTION_SIZE)
        .map(|sub| {
            let flags = u16::from_le_bytes(sub[40..42].try_into().ok()?);
            (sub[8] == EVENTTYPE_CLOCK && flags & SUBCLOCKFLAGS_ABSTIME == 0).then(|| Timer {
                userdata: u64::from_le_bytes(sub[0..8].try_into().unwrap()),
                timeout_ns: u64::from_le_bytes(sub[24..32].try_into().unwrap()),
            })
        })
        .collect()
}

/// Sleeps `duration` in slices, failing with an interrupt as soon as the run must stop.
fn sleep_unless_stopped(
    caller: &mut Caller<'_, RunState>,
    duration: Duration,
) -> wasmtime::Result<()> {
    let wake = Instant::now() + duration;
    loop {
        if caller.data_mut().should_stop() {
            return Err(Trap::Interrupt.into());
        }
        let now = Instant::now();
        if now >= wake {
            return Ok(());
        }
        thread::sleep((wake - now).min(SLICE));
    }
}

/// Writes one clock event per fired timer and their count; returns the errno.
fn write_events(memory: &mut [u8], at: usize, count_at: usize, fired: &[&Timer]) -> i32 {
    let Some(end) = fired
        .len()
        .checked_mul(EVENT_SIZE)
        .and_then(|len| at.checked_add(len))
    else {
        return ERRNO_FAULT;
    };
    if end > memory.len() || count_at.checked_add(4).is_none_or(|e| e > memory.len()) {
        return ERRNO_FAULT;
    }
    for (event, timer) in memory[at..end].chunks_exact_mut(EVENT_SIZE).zip(fired) {
        event.fill(0);
        event[0..8].copy_from_slice(&timer.userdata.to_le_bytes());
        event[10] = EVENTTYPE_CLOCK;
    }
    memory[count_at..count_at + 4].copy_from_slice(&(fired.len() as u32).to_le_bytes());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(
        userdata: u64,
        tag: u8,
        timeout_ns: u64,
        flags: u16,
    ) -> [u8; SUBSCRIPTION_SIZE] {
        let mut sub = [0u8; SUBSCRIPTION_SIZE];
        sub[0..8].copy_from_slice(&userdata.to_le_bytes());
        sub[8] = tag;
        sub[24..32].copy_from_slice(&timeout_ns.to_le_bytes());
        sub[40..42].copy_from_slice(&flags.to_le_bytes());
        sub
    }

    #[test]
    fn only_all_relative_timer_waits_are_handled_here() {
        let mut memory = vec![0u8; 8];
        memory.extend(subscription(7, EVENTTYPE_CLOCK, 5, 0));
        memory.extend(subscription(8, EVENTTYPE_CLOCK, 9, 0));
        let timers = relative_timers(&memory, 8, 2).unwrap();
        assert_eq!(
            timers
                .iter()
                .map(|t| (t.userdata, t.timeout_ns))
                .collect::<Vec<_>>(),
            [(7, 5), (8, 9)]
        );

        memory.extend(subscription(9, 1, 0, 0)); // an fd_read subscription
        assert!(relative_timers(&memory, 8, 3).is_none());
        let absolute = subscription(1, EVENTTYPE_CLOCK, 5, SUBCLOCKFLAGS_ABSTIME);
        assert!(relative_timers(&absolute, 0, 1).is_none());
        assert!(relative_timers(&memory, 8, 100).is_none(), "out of bounds");
        assert!(relative_timers(&memory, 8, 0).is_none());
    }

    #[test]
    fn events_are_written_with_their_count() {
        let mut memory = vec![0xffu8; 100];
        let timer = Timer {
            userdata: 42,
            timeout_ns: 1,
        };
        assert_eq!(write_events(&mut memory, 0, 96, &[&timer]), 0);
        assert_eq!(u64::from_le_bytes(memory[0..8].try_into().unwrap()), 42);
        assert_eq!(&memory[8..10], &[0, 0], "errno success");
        assert_eq!(memory[10], EVENTTYPE_CLOCK);
        assert_eq!(u32::from_le_bytes(memory[96..100].try_into().unwrap()), 1);
        assert_eq!(write_events(&mut memory, 90, 0, &[&timer]), ERRNO_FAULT);
    }
}
