//! `hostile`: a deliberately misbehaving policy for the host's safety tests. Never deploy.
//!
//! It passes validation (configure and the smoke `route` behave), then misbehaves on any
//! request tagged `hostile=go`, the way a buggy policy fails only on inputs its author
//! never tried. `[params] mode` picks the misbehaviour.

use std::cell::RefCell;

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Policy, Request, Route, Target};

pub struct Hostile;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Loop forever.
    Spin,
    /// Allocate until the memory cap stops it.
    MemoryBomb,
    /// Panic (a trap).
    Panic,
    /// Route to a node that does not exist.
    UnknownNode,
    /// Return a multi-megabyte reason and a huge target list.
    HugeOutput,
    /// Print to stdout and stderr without end, then loop.
    Chatty,
    /// Answer with another model than the one requested (the ryzen's `llama2-70b-q4`), as
    /// if to let a key limited to one model use a bigger one.
    OtherModel,
    /// Sleep for a minute (a real host-side wait the epoch deadline cannot interrupt).
    Sleep,
    /// Compute for a while (20 million steps, some milliseconds), then decide as usual: a
    /// slow policy within its deadline.
    Slow,
    /// Sleep for a minute in `configure`, when the policy is loaded.
    SleepInConfigure,
    /// A planted bug that needs no trigger tag: with more than five candidates, route to an
    /// unhealthy one (what `switchyard policy check` must find).
    UnhealthyWhenCrowded,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    mode: Mode,
}

thread_local! {
    static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
}

impl Policy for Hostile {
    fn configure(params: String) -> Result<(), String> {
        let params: Params = sdk::decode_params(&params)?;
        if matches!(params.mode, Mode::SleepInConfigure) {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        MODE.with(|m| *m.borrow_mut() = Some(params.mode));
        Ok(())
    }

    fn route(req: &Request, nodes: &[Node]) -> Decision {
        let triggered = req.tags.iter().any(|(k, v)| k == "hostile" && v == "go");
        let mode = MODE.with(|m| *m.borrow());
        match (triggered, mode) {
            (_, Some(Mode::UnhealthyWhenCrowded)) if nodes.len() > 5 => match nodes.iter().find(|n| !n.healthy) {
                Some(node) => Decision::Route(Route {
                    targets: vec![sdk::target_for(node, req)],
                    reason: "the first unhealthy node (a planted bug)".to_owned(),
                    wait_for_first: false,
                }),
                None => behave(req, nodes),
            },
            (true, Some(Mode::Slow)) => {
                let mut x: u64 = 0;
                for _ in 0..20_000_000u32 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                std::hint::black_box(x);
                behave(req, nodes)
            }
            (true, Some(mode)) => misbehave(mode, req),
            _ => behave(req, nodes),
        }
    }
}

sdk::export_policy!(Hostile);

fn behave(req: &Request, nodes: &[Node]) -> Decision {
    match nodes.iter().find(|n| sdk::ineligibility(n, req).is_none()) {
        Some(node) => Decision::Route(Route {
            targets: vec![sdk::target_for(node, req)],
            reason: "first eligible".to_owned(),
            wait_for_first: false,
        }),
        None => sdk::no_capacity(req, nodes),
    }
}

fn misbehave(mode: Mode, req: &Request) -> Decision {
    match mode {
        Mode::Spin => spin(),
        Mode::MemoryBomb => {
            // Reserve (memory.grow) without touching the pages: the cap, not the clock, must stop it.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(Vec::with_capacity(4 << 20));
                std::hint::black_box(&hoard);
            }
        }
        Mode::Panic => panic!("hostile policy panics on request {}", req.id),
        Mode::UnknownNode => Decision::Route(Route {
            targets: vec![Target {
                node: "no-such-node".to_owned(),
                model: req.model.clone(),
            }],
            reason: "routing to a node that does not exist".to_owned(),
            wait_for_first: false,
        }),
        Mode::HugeOutput => Decision::Route(Route {
            targets: (0..10_000)
                .map(|i| Target {
                    node: format!("node-{i}"),
                    model: req.model.clone(),
                })
                .collect(),
            reason: "x".repeat(2 << 20),
            wait_for_first: false,
        }),
        Mode::Chatty => {
            #[allow(clippy::print_stdout)]
            for i in 0..u64::MAX {
                println!("chatty policy line {i} {}", "y".repeat(200));
                eprintln!("chatty policy stderr {i}");
            }
            spin()
        }
        Mode::OtherModel => Decision::Route(Route {
            targets: vec![Target {
                node: "ryzen".to_owned(),
                model: "llama2-70b-q4".to_owned(),
            }],
            reason: "a bigger model than asked for".to_owned(),
            wait_for_first: false,
        }),
        Mode::UnhealthyWhenCrowded => behave(req, &[]),
        Mode::Slow => behave(req, &[]),
        Mode::Sleep | Mode::SleepInConfigure => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            behave(req, &[])
        }
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
