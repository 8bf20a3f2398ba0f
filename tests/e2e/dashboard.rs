//! The dashboard in a real headless Chromium against the demo cluster: without the admin
//! token it shows nothing but the token form (a wrong token is refused); with it, the three
//! demo nodes with live numbers that change while prompts flow, a request's decision within
//! a second, and the activate and rollback controls change the active policy.
//! `SWITCHYARD_SCREENSHOT=path.png` also saves a screenshot of the page.

use std::time::{Duration, Instant};

use crate::browser::Browser;
use crate::process::{Controller, curl_with_key, policies_copy};

const BODY: &str = r#"{"model": "qwen25-coder-7b", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#;
const SHOWS_WITHIN: Duration = Duration::from_secs(20);

fn ask(demo: &Controller, key: &str, task: &str) {
    let hint = format!("x-switchyard-task: {task}");
    let (status, text) = curl_with_key(
        &format!("{}/v1/chat/completions", demo.url),
        key,
        &["-H", &hint, "-d", BODY],
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn the_dashboard_shows_the_live_cluster_and_its_controls_change_the_active_policy() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let key = demo.api_key.clone().expect("key");
    let seed = demo.active();
    let mut browser = Browser::start();

    // No token: the form, and no data.
    browser.navigate(&format!("{}/dashboard", demo.url));
    assert!(
        browser
            .wait_for(
                SHOWS_WITHIN,
                "!document.getElementById('login').classList.contains('hidden')"
            )
            .is_some(),
        "the token form"
    );
    assert_eq!(browser.eval("document.querySelectorAll('#nodes .card').length"), 0);
    browser.navigate(&format!("{}/dashboard#token=not-the-token", demo.url));
    assert!(
        browser
            .wait_for(
                SHOWS_WITHIN,
                "document.getElementById('login-error').textContent.includes('refused')"
            )
            .is_some(),
        "a wrong token is refused"
    );

    // The token: three nodes, and the token gone from the address bar.
    browser.navigate(&format!("{}/dashboard#token={}", demo.url, demo.token));
    let nodes =
        "[...document.querySelectorAll('#nodes .card')].map(c => c.dataset.node).sort().join(',') === 'm4,ryzen,xeon'";
    assert!(
        browser.wait_for(SHOWS_WITHIN, nodes).is_some(),
        "{}",
        browser.eval("document.body.innerText")
    );
    assert_eq!(browser.eval("location.hash"), "");
    assert!(
        browser
            .eval("document.getElementById('active-policy').textContent")
            .as_str()
            .is_some_and(|p| p == seed),
        "{}",
        browser.eval("document.getElementById('active-policy').textContent")
    );
    let m4_card = "document.querySelector('#node-m4').innerText";
    let card = browser.eval(m4_card).as_str().unwrap_or_default().to_owned();
    for field in [
        "in flight / max",
        "telemetry age",
        "certificate",
        "tokens/s",
        "answered, 5 min",
    ] {
        assert!(card.contains(field), "{field} missing from the m4's card: {card}");
    }

    // Live numbers change while prompts flow.
    let answered = "Number(document.querySelector('#node-m4 .answered').textContent)";
    let before = browser.eval(answered).as_u64().expect("answered");
    for _ in 0..3 {
        ask(&demo, &key, "development");
    }
    assert!(
        browser
            .wait_for(SHOWS_WITHIN, &format!("{answered} >= {}", before + 3))
            .is_some(),
        "the m4's count did not move: {}",
        browser.eval(m4_card)
    );

    // A decision appears within a second of its answer.
    let probe = format!("dashboard-probe-{}", std::process::id());
    ask(&demo, &key, &probe);
    let answered_at = Instant::now();
    let shown = browser.wait_for(
        Duration::from_secs(5),
        &format!("[...document.querySelectorAll('#decisions tbody tr')].some(r => r.innerText.includes('{probe}'))"),
    );
    let shown = shown.unwrap_or_else(|| {
        panic!(
            "no row for {probe}: {}",
            browser.eval("document.querySelector('#decisions').innerText")
        )
    });
    eprintln!("decision shown {:?} after its answer", answered_at.elapsed());
    assert!(shown < Duration::from_secs(1), "the decision took {shown:?} to appear");

    if let Ok(path) = std::env::var("SWITCHYARD_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot()).expect("screenshot");
    }

    // The controls: activate a loaded version, then roll back.
    let activate = "document.querySelector('button[data-activate^=\"least-loaded@\"]')";
    assert_eq!(browser.eval(&format!("{activate} !== null")), true);
    browser.eval(&format!("{activate}.click(); true"));
    assert!(
        demo.wait_for(SHOWS_WITHIN, |d| d.active().starts_with("least-loaded@")),
        "activate did not change the active policy: {}; the page says {}",
        demo.active(),
        browser.eval("document.getElementById('message').textContent")
    );
    assert!(
        browser
            .wait_for(
                SHOWS_WITHIN,
                "document.getElementById('active-policy').textContent.startsWith('least-loaded@')"
            )
            .is_some()
    );
    browser.eval("document.getElementById('rollback').click(); true");
    assert!(
        demo.wait_for(SHOWS_WITHIN, |d| d.active() == seed),
        "rollback did not restore {seed}: {}",
        demo.active()
    );
    assert!(
        browser
            .wait_for(
                SHOWS_WITHIN,
                &format!("document.getElementById('active-policy').textContent === '{seed}'")
            )
            .is_some()
    );
    assert_eq!(browser.eval("document.getElementById('message').textContent"), "");
}
