use super::reference::EverySample;
use super::*;
use proptest::prelude::*;

fn feed(state: &mut WindowState, samples: &[(i64, f64)]) -> Vec<WindowResult> {
    let mut closed = Vec::new();
    for (ts, v) in samples {
        state.push(*ts, *v, Aggregate::Mean, &mut closed);
    }
    closed
}

const AGGREGATES: [Aggregate; 7] = [
    Aggregate::Mean,
    Aggregate::P95,
    Aggregate::Max,
    Aggregate::Min,
    Aggregate::Sum,
    Aggregate::Count,
    Aggregate::Rate,
];

/// The value a count window of `values.len()` gives for `aggregate`.
fn count_window_value(aggregate: Aggregate, values: &[f64]) -> f64 {
    let mut w = WindowState::new(WindowSpec::Count { size: values.len() }, aggregate);
    let mut closed = Vec::new();
    for (i, v) in values.iter().enumerate() {
        w.push(i as i64, *v, aggregate, &mut closed);
    }
    assert_eq!(closed.len(), 1);
    closed[0].value
}

#[test]
fn aggregates() {
    let v = [1.0, 0.0, 3.0, 0.0];
    assert_eq!(count_window_value(Aggregate::Mean, &v), 1.0);
    assert_eq!(count_window_value(Aggregate::Max, &v), 3.0);
    assert_eq!(count_window_value(Aggregate::Min, &v), 0.0);
    assert_eq!(count_window_value(Aggregate::Sum, &v), 4.0);
    assert_eq!(count_window_value(Aggregate::Count, &v), 4.0);
    assert_eq!(count_window_value(Aggregate::Rate, &v), 0.5);
    let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    assert_eq!(count_window_value(Aggregate::P95, &hundred), 95.0);
    assert_eq!(count_window_value(Aggregate::P95, &[7.0]), 7.0);
}

#[test]
fn sums_start_where_iterator_sum_starts() {
    for values in [&[-0.0][..], &[0.0], &[-0.0, -0.0], &[1e308, 1e308, -1e308]] {
        let expected: f64 = values.iter().sum();
        let got = count_window_value(Aggregate::Sum, values);
        assert_eq!(got.to_bits(), expected.to_bits(), "{values:?}");
    }
}

#[test]
fn a_count_window_percentile_keeps_only_the_samples_above_its_rank() {
    assert_eq!(count_window_kept(50), 3, "rank 48 of 50");
    assert_eq!(count_window_kept(1), 1);
    assert_eq!(count_window_kept(20), 2, "rank 19 of 20");
    let mut w = WindowState::new(WindowSpec::Count { size: 50 }, Aggregate::P95);
    let mut closed = Vec::new();
    for i in 0..49 {
        w.push(i, f64::from(i as i32 % 17), Aggregate::P95, &mut closed);
    }
    let WindowState::Count { largest, .. } = &w else {
        unreachable!()
    };
    assert_eq!(largest.len(), 3);
    assert!(largest.capacity() <= 4, "room for what it keeps");
}

#[test]
fn a_time_window_holds_no_samples_unless_its_aggregate_needs_them() {
    let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: 1_000 }, Aggregate::Mean);
    let mut closed = Vec::new();
    for i in 0..500 {
        w.push(i, 1.0, Aggregate::Mean, &mut closed);
    }
    let WindowState::Tumbling { values, pane, .. } = &w else {
        unreachable!()
    };
    assert_eq!((values.capacity(), pane.count), (0, 500));
    let mut s = WindowState::new(
        WindowSpec::Sliding {
            size_ms: 1_000,
            slide_ms: 500,
        },
        Aggregate::Rate,
    );
    for i in 0..5_000 {
        s.push(i, f64::from(i as i32 % 2), Aggregate::Rate, &mut closed);
    }
    let WindowState::Sliding { panes, samples, .. } = &s else {
        unreachable!()
    };
    assert_eq!(samples.capacity(), 0);
    assert!(panes.len() <= 2 && panes.capacity() <= 2, "{panes:?}");
}

#[test]
fn count_window_closes_every_size_samples() {
    let mut w = WindowState::new(WindowSpec::Count { size: 2 }, Aggregate::Mean);
    let closed = feed(&mut w, &[(10, 1.0), (20, 3.0), (30, 5.0)]);
    assert_eq!(
        closed,
        vec![WindowResult {
            start: 10,
            end: 20,
            value: 2.0,
            samples: 2
        }]
    );
    assert_eq!(w.buffered(), 1);
}

#[test]
fn tumbling_window_closes_when_a_later_window_starts_and_rejects_late_samples() {
    let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: 100 }, Aggregate::Mean);
    let mut closed = Vec::new();
    assert_eq!(
        w.push(105, 1.0, Aggregate::Mean, &mut closed),
        Placement::Accepted
    );
    assert_eq!(
        w.push(150, 3.0, Aggregate::Mean, &mut closed),
        Placement::Accepted
    );
    assert_eq!(
        w.push(99, 9.0, Aggregate::Mean, &mut closed),
        Placement::TooLate
    );
    assert!(closed.is_empty());
    assert_eq!(
        w.push(420, 5.0, Aggregate::Mean, &mut closed),
        Placement::Accepted
    );
    assert_eq!(
        closed,
        vec![WindowResult {
            start: 100,
            end: 200,
            value: 2.0,
            samples: 2
        }]
    );
}

#[test]
fn sliding_window_emits_every_slide_over_the_last_size() {
    let mut w = WindowState::new(
        WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        },
        Aggregate::Mean,
    );
    // The first window starts at the first sample's slide-aligned time.
    let closed = feed(&mut w, &[(0, 1.0), (60, 3.0), (110, 5.0), (160, 7.0)]);
    let spans: Vec<(i64, i64, f64)> = closed.iter().map(|r| (r.start, r.end, r.value)).collect();
    assert_eq!(spans, vec![(0, 100, 2.0), (50, 150, 4.0)]);
}

#[test]
fn sliding_window_skips_long_gaps_without_emitting_empty_windows() {
    let mut w = WindowState::new(
        WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        },
        Aggregate::Mean,
    );
    let closed = feed(&mut w, &[(0, 1.0), (1_000_000, 3.0), (1_000_200, 5.0)]);
    let spans: Vec<(i64, i64)> = closed.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(
        spans,
        vec![(0, 100), (999_950, 1_000_050), (1_000_000, 1_000_100)]
    );
    assert!(closed.iter().all(|r| r.samples == 1));
}

#[test]
fn close_until_judges_windows_the_watermark_passed_and_refuses_their_samples_after() {
    let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: 100 }, Aggregate::Mean);
    feed(&mut w, &[(105, 1.0), (150, 3.0)]);
    assert_eq!(w.next_end(), Some(200));
    let mut closed = Vec::new();
    w.close_until(199, Aggregate::Mean, &mut closed);
    assert!(closed.is_empty(), "not before its end");
    w.close_until(200, Aggregate::Mean, &mut closed);
    assert_eq!(
        closed,
        vec![WindowResult {
            start: 100,
            end: 200,
            value: 2.0,
            samples: 2
        }]
    );
    assert_eq!(w.next_end(), None, "nothing held");
    assert_eq!(
        w.push(150, 9.0, Aggregate::Mean, &mut closed),
        Placement::TooLate
    );
    assert_eq!(
        w.push(210, 5.0, Aggregate::Mean, &mut closed),
        Placement::Accepted
    );
    assert_eq!(closed.len(), 1, "the closed window is not judged twice");

    let mut s = WindowState::new(
        WindowSpec::Sliding {
            size_ms: 100,
            slide_ms: 50,
        },
        Aggregate::Mean,
    );
    feed(&mut s, &[(0, 1.0), (60, 3.0)]);
    let mut closed = Vec::new();
    s.close_until(1_000, Aggregate::Mean, &mut closed);
    let spans: Vec<(i64, i64, f64)> = closed.iter().map(|r| (r.start, r.end, r.value)).collect();
    assert_eq!(spans, vec![(0, 100, 2.0), (50, 150, 3.0)]);
    assert_eq!(s.next_end(), None);
    // After the gap the windows go on as after a gap between pushes:
    // the first one ending after the next sample holds it.
    let later = feed(&mut s, &[(1_010, 1.0), (1_100, 1.0)]);
    let ends: Vec<i64> = later.iter().map(|r| r.end).collect();
    assert_eq!(ends, vec![1_050, 1_100]);
}

#[test]
fn a_window_absorbing_saved_samples_closes_as_if_they_had_been_pushed() {
    let samples = [(1_000, 4.0), (1_200, 0.0), (1_450, 2.0), (1_300, 5.0)];
    for aggregate in AGGREGATES {
        for spec in [
            WindowSpec::Count { size: 6 },
            WindowSpec::Tumbling { size_ms: 1_000 },
            WindowSpec::Sliding {
                size_ms: 1_000,
                slide_ms: 250,
            },
        ] {
            let mut pushed = WindowState::new(spec, aggregate);
            let mut closed = Vec::new();
            for (ts, v) in samples {
                pushed.push(ts, v, aggregate, &mut closed);
            }
            assert!(closed.is_empty());
            let mut absorbed = WindowState::new(spec, aggregate);
            for (ts, v) in samples {
                absorbed.absorb(ts, v, aggregate);
            }
            match (&mut absorbed, &pushed) {
                (
                    WindowState::Count {
                        first_ts, last_ts, ..
                    },
                    WindowState::Count {
                        first_ts: f,
                        last_ts: l,
                        ..
                    },
                ) => (*first_ts, *last_ts) = (*f, *l),
                (WindowState::Tumbling { start, .. }, WindowState::Tumbling { start: s, .. }) => {
                    *start = *s
                }
                (
                    WindowState::Sliding { next_end, .. },
                    WindowState::Sliding { next_end: e, .. },
                ) => *next_end = *e,
                _ => unreachable!(),
            }
            assert_eq!(absorbed, pushed, "{spec:?} {aggregate:?}");
        }
    }
}

/// One step of a window's life: a sample, or the watermark passing a time.
#[derive(Debug, Clone)]
enum Step {
    Push { gap: i64, value: f64 },
    CloseUntil { ahead: i64 },
}

fn spec_strategy() -> impl Strategy<Value = WindowSpec> {
    prop_oneof![
        (1usize..60).prop_map(|size| WindowSpec::Count { size }),
        (1i64..1_000).prop_map(|size_ms| WindowSpec::Tumbling { size_ms }),
        ((1i64..300), (2i64..6)).prop_map(|(slide_ms, n)| WindowSpec::Sliding {
            size_ms: slide_ms * n,
            slide_ms,
        }),
    ]
}

fn steps(values: impl Strategy<Value = f64> + Clone) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            8 => ((-400i64..600), values).prop_map(|(gap, value)| Step::Push { gap, value }),
            1 => (0i64..2_000).prop_map(|ahead| Step::CloseUntil { ahead }),
        ],
        1..250,
    )
}

/// Runs `steps` through the compact window and through the reference that
/// keeps every sample; `same` compares two closed windows' values.
fn agree(
    spec: WindowSpec,
    aggregate: Aggregate,
    start: i64,
    steps: &[Step],
    same: impl Fn(f64, f64) -> bool,
) -> Result<(), TestCaseError> {
    let mut compact = WindowState::new(spec, aggregate);
    let mut every = EverySample::new(spec);
    let (mut ts, mut watermark) = (start, start);
    for step in steps {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        match step {
            Step::Push { gap, value } => {
                ts = ts.saturating_add(*gap);
                watermark = watermark.max(ts);
                prop_assert_eq!(
                    compact.push(ts, *value, aggregate, &mut a),
                    every.push(ts, *value, aggregate, &mut b)
                );
            }
            Step::CloseUntil { ahead } => {
                watermark += ahead;
                compact.close_until(watermark, aggregate, &mut a);
                every.close_until(watermark, aggregate, &mut b);
            }
        }
        prop_assert_eq!(a.len(), b.len(), "{:?} vs {:?}", a, b);
        for (x, y) in a.iter().zip(&b) {
            prop_assert_eq!((x.start, x.end, x.samples), (y.start, y.end, y.samples));
            prop_assert!(same(x.value, y.value), "{:?} vs {:?}", x, y);
        }
        prop_assert_eq!(compact.next_end(), every.next_end());
        prop_assert_eq!(compact.buffered(), every.buffered());
    }
    Ok(())
}

fn aggregate_strategy() -> impl Strategy<Value = Aggregate> {
    proptest::sample::select(AGGREGATES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With whole-number samples (whose sums are exact in any order), the
    /// compact windows close the same windows at the same times with the
    /// same values, refuse the same samples, and hold the same count as
    /// the windows that kept every sample.
    #[test]
    fn compact_windows_agree_with_windows_that_keep_every_sample(
        spec in spec_strategy(),
        aggregate in aggregate_strategy(),
        start in -1_000_000i64..1_000_000,
        steps in steps((-3i32..4).prop_map(f64::from)),
    ) {
        agree(spec, aggregate, start, &steps, |a, b| a.to_bits() == b.to_bits())?;
    }

    /// With arbitrary finite samples the values are the same bit for bit,
    /// but for a sliding window's sum and mean, which add panes' sums.
    #[test]
    fn compact_windows_agree_on_arbitrary_samples(
        spec in spec_strategy(),
        aggregate in aggregate_strategy(),
        start in -1_000_000i64..1_000_000,
        steps in steps(-1e6f64..1e6),
    ) {
        let pane_sums = matches!(spec, WindowSpec::Sliding { .. })
            && matches!(aggregate, Aggregate::Mean | Aggregate::Sum);
        agree(spec, aggregate, start, &steps, |a, b| {
            if pane_sums {
                (a - b).abs() <= 1e-9 * (1.0 + b.abs())
            } else {
                a.to_bits() == b.to_bits()
            }
        })?;
    }

    /// In-order samples into a tumbling window: every sample lands in
    /// exactly one closed or open window, and closed windows are ordered.
    #[test]
    fn tumbling_accounts_for_every_sample(gaps in proptest::collection::vec(0i64..500, 1..200), size in 1i64..1000) {
        let mut w = WindowState::new(WindowSpec::Tumbling { size_ms: size }, Aggregate::Count);
        let mut ts = 0;
        let mut closed = Vec::new();
        for g in &gaps {
            ts += g;
            prop_assert_eq!(w.push(ts, 1.0, Aggregate::Count, &mut closed), Placement::Accepted);
        }
        let in_closed: usize = closed.iter().map(|r| r.samples).sum();
        prop_assert_eq!(in_closed + w.buffered(), gaps.len());
        prop_assert!(closed.windows(2).all(|p| p[0].end <= p[1].start));
    }
}
