//! The search: sizes between a floor and a ceiling, each tried once, the
//! answer (it fits, a router said how much fits, or silence) narrowing
//! the range; and what a probe found.

use std::io;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Icmp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The path carries the outer MTU.
    Clear,
    /// The path carries less than the outer MTU.
    Bottleneck,
    /// No answer at the floor size either.
    Unreachable,
    /// The target's name does not resolve to an address.
    Unresolved,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub target: String,
    pub address: Option<String>,
    pub method: Option<Method>,
    pub outcome: Outcome,
    /// The largest packet (IP header included) that got through.
    pub path_mtu: Option<u32>,
    /// Packets above `path_mtu` vanished without an ICMP "fragmentation
    /// needed" (ICMP only: TCP cannot tell).
    pub black_hole: bool,
    /// The largest size an answer named: a router's ICMP "fragmentation
    /// needed" (ICMP), or the peer's own MSS plus headers (TCP).
    pub reported_mtu: Option<u32>,
    pub sizes_tried: u32,
    pub took_ms: u64,
    /// What was tried and why it gave up, for a person.
    pub note: String,
}

impl ProbeResult {
    /// Nothing measured yet toward `target`.
    pub(super) fn unmeasured(target: &str) -> ProbeResult {
        ProbeResult {
            target: target.to_string(),
            address: None,
            method: None,
            outcome: Outcome::Unreachable,
            path_mtu: None,
            black_hole: false,
            reported_mtu: None,
            sizes_tried: 0,
            took_ms: 0,
            note: String::new(),
        }
    }
}

/// What one size did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Fits,
    /// A router said the path takes at most this (0: too big, with no
    /// figure: above this end's own interface).
    TooBig(u32),
    Silent,
}

/// How many times the boundary is tried again when it rests on a "too
/// big" alone (a forged one would have to match another random echo each
/// time) or on silence (an echo lost on a congested link is not a
/// bottleneck).
const CONFIRMATIONS: u32 = 2;

/// Binary search with `try_size`; fills the result, or says why the target
/// cannot be measured.
///
/// A size is narrower than the path only once an echo passed at it and one
/// at the next size up did not, more than once. A "too big" only points at
/// the size to try next; the size the search ends below is tried again
/// and counts as failing only if it fails again (a second "too big", or
/// silence [`CONFIRMATIONS`] more times): never on one message that
/// anybody on the way, or a pod writing to the node's address, could have
/// forged, nor on one lost echo.
pub(super) fn search(
    result: &mut ProbeResult,
    floor: u32,
    ceiling: u32,
    mut try_size: impl FnMut(u32) -> io::Result<Answer>,
) -> Result<(), String> {
    let mut attempt = |size: u32, result: &mut ProbeResult| -> Result<Answer, String> {
        result.sizes_tried += 1;
        try_size(size).map_err(|e| e.to_string())
    };
    let mut first = attempt(floor, result)?;
    if matches!(first, Answer::TooBig(mtu) if mtu > 0) {
        // A router's word alone: tried again before the floor is given up.
        first = attempt(floor, result)?;
    }
    match first {
        Answer::Fits => {}
        Answer::TooBig(mtu) => {
            return Err(format!(
                "even {floor} bytes are too big (a router says {mtu})"
            ))
        }
        Answer::Silent => return Err(format!("no answer to {floor}-byte probes")),
    }
    let (mut fits, mut fails) = (floor, ceiling + 1);
    // `fails` rests on one answer (a router's message, or silence), not
    // yet seen again.
    let mut fails_on_word = false;
    let mut confirmations = 0;
    let mut silent_above = false;
    let mut reported = None;
    let mut next = ceiling;
    loop {
        while fails - fits > 1 {
            match attempt(next, result)? {
                Answer::Fits => {
                    fits = next;
                    // The size a router named fits: the next one up says
                    // whether the path is exactly that.
                    if reported == Some(next) && fails > next + 1 {
                        next += 1;
                        continue;
                    }
                }
                Answer::Silent => {
                    fails = next;
                    fails_on_word = true;
                    silent_above = true;
                }
                // Our own interface's refusal: not a message from anyone.
                Answer::TooBig(0) => {
                    fails = next;
                    fails_on_word = false;
                }
                Answer::TooBig(mtu) => {
                    fails = next;
                    fails_on_word = true;
                    reported = Some(mtu);
                    // The router's figure is the likely answer: try it next.
                    if mtu > fits && mtu < fails {
                        next = mtu;
                        continue;
                    }
                }
            }
            next = fits + (fails - fits) / 2;
        }
        if !(fails_on_word && fails <= ceiling && confirmations < CONFIRMATIONS) {
            break;
        }
        // The boundary rests on one answer: try that size again.
        confirmations += 1;
        match attempt(fails, result)? {
            Answer::Fits => {
                // It was not the path's: look above it.
                fits = fails;
                fails = ceiling + 1;
                fails_on_word = false;
                reported = None;
                next = ceiling;
                confirmations = 0;
            }
            // Silence again: tried once more (loss comes in bursts).
            Answer::Silent => silent_above = true,
            // A second matching message: the path's.
            Answer::TooBig(_) => fails_on_word = false,
        }
    }
    result.path_mtu = Some(fits);
    result.reported_mtu = reported;
    result.black_hole = fits < ceiling && silent_above && reported.is_none();
    result.outcome = if fits >= ceiling {
        Outcome::Clear
    } else {
        Outcome::Bottleneck
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path of `mtu` that says "too big" (`reports`) or stays silent.
    fn path(mtu: u32, reports: bool) -> impl FnMut(u32) -> io::Result<Answer> {
        move |size| {
            Ok(if size <= mtu {
                Answer::Fits
            } else if reports {
                Answer::TooBig(mtu)
            } else {
                Answer::Silent
            })
        }
    }

    fn empty() -> ProbeResult {
        ProbeResult::unmeasured("t")
    }

    #[test]
    fn a_silent_bottleneck_is_found_exactly_and_called_a_black_hole() {
        let mut r = empty();
        search(&mut r, 1280, 1500, path(1400, false)).unwrap();
        assert_eq!(r.path_mtu, Some(1400));
        assert!(r.black_hole);
        assert_eq!(r.outcome, Outcome::Bottleneck);
        assert!(r.sizes_tried <= 2 + 8 + CONFIRMATIONS, "{}", r.sizes_tried);
    }

    #[test]
    fn a_reported_bottleneck_is_measured_and_confirmed_in_five_sizes() {
        let mut r = empty();
        search(&mut r, 1280, 1500, path(1400, true)).unwrap();
        assert_eq!((r.path_mtu, r.reported_mtu), (Some(1400), Some(1400)));
        assert!(!r.black_hole);
        // The floor, the ceiling (too big: 1400), 1400, 1401 (too big),
        // 1401 again.
        assert_eq!(r.sizes_tried, 5);
    }

    #[test]
    fn a_clear_path_takes_two_sizes() {
        let mut r = empty();
        search(&mut r, 1280, 1450, path(9000, false)).unwrap();
        assert_eq!(
            (r.path_mtu, r.outcome, r.sizes_tried),
            (Some(1450), Outcome::Clear, 2)
        );
    }

    #[test]
    fn too_big_without_a_figure_is_searched_like_silence_but_no_black_hole() {
        let mut r = empty();
        search(&mut r, 576, 1500, |size| {
            Ok(if size <= 1400 {
                Answer::Fits
            } else {
                Answer::TooBig(0)
            })
        })
        .unwrap();
        assert_eq!(
            (r.path_mtu, r.reported_mtu, r.black_hole),
            (Some(1400), None, false)
        );
    }

    #[test]
    fn a_forged_too_big_never_narrows_a_clear_path() {
        // Every size's first echo draws a "too big" naming 1300 (a forger
        // who matched it); the path itself carries 1500.
        let mut tried = std::collections::HashSet::new();
        let mut r = empty();
        search(&mut r, 1280, 1500, |size| {
            Ok(if tried.insert(size) {
                Answer::TooBig(1300)
            } else {
                Answer::Fits
            })
        })
        .unwrap();
        assert_eq!(
            (r.path_mtu, r.outcome),
            (Some(1500), Outcome::Clear),
            "{r:?}"
        );
    }

    #[test]
    fn one_lost_echo_never_narrows_the_path() {
        // A clear path of 1500 where one echo in ten is lost, the same
        // sizes each run: the first try of every size is lost.
        let mut tried = std::collections::HashSet::new();
        let mut r = empty();
        search(&mut r, 1280, 1500, |size| {
            Ok(if tried.insert(size) && size > 1280 {
                Answer::Silent
            } else {
                Answer::Fits
            })
        })
        .unwrap();
        assert_eq!(
            (r.path_mtu, r.outcome),
            (Some(1500), Outcome::Clear),
            "{r:?}"
        );
    }

    #[test]
    fn a_real_bottleneck_stands_when_tried_again() {
        let mut r = empty();
        search(&mut r, 1280, 1500, path(1400, true)).unwrap();
        assert_eq!(r.path_mtu, Some(1400));
        // 1280, 1500 (too big: 1400), 1400, 1401, and 1401 again.
        assert!(r.sizes_tried <= 5, "{}", r.sizes_tried);
    }

    #[test]
    fn no_answer_at_the_floor_is_no_measurement() {
        let mut r = empty();
        let err = search(&mut r, 1280, 1500, |_| Ok(Answer::Silent)).unwrap_err();
        assert!(err.contains("no answer to 1280-byte probes"), "{err}");
        assert_eq!(r.path_mtu, None);
    }
}
