//! Delivery against real receivers: an HTTP server on a free port and the
//! MQTT broker on 127.0.0.1:1883 (`scripts/services.sh` starts it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use notify::{Endpoint, Event, Message, Notifier, NotifierConfig, Reports, Target, parse_target};
use parking_lot::Mutex;
use tokio::sync::mpsc;

#[derive(Default)]
struct Log(Mutex<Vec<(String, Event)>>);

impl Reports for Log {
    fn report(&self, key: &str, event: Event) {
        self.0.lock().push((key.to_string(), event));
    }
}

impl Log {
    fn events(&self, key: &str) -> Vec<Event> {
        self.0
            .lock()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, e)| e.clone())
            .collect()
    }

    async fn wait_for(&self, key: &str, n: usize) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events(key);
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type Received = mpsc::UnboundedReceiver<(HeaderMap, Bytes)>;

/// An HTTP receiver answering `status` after `delay`, returning its URL and
/// what it received.
async fn receiver(status: StatusCode, delay: Duration) -> (String, Received) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/notify",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                tokio::time::sleep(delay).await;
                status
            }
        }),
    );
    (format!("http://{}/notify", serve(app).await), rx)
}

/// Serves `app` on a free port of 127.0.0.1.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn endpoint(uri: &str, info: &[(&str, &str)]) -> Arc<Endpoint> {
    let info: Vec<(String, String)> = info
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(Endpoint {
        target: parse_target(uri, &info).unwrap(),
        receiver_info: vec![("X-City".into(), "Guangzhou".into())],
        timeout: Some(Duration::from_secs(2)),
        cooldown: None,
    })
}

fn message(body: &str) -> Message {
    Message {
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Bytes::from(body.to_string()),
        since: Instant::now(),
    }
}

fn config() -> NotifierConfig {
    NotifierConfig {
        queue_depth: 4,
        max_attempts: 3,
        backoff: Duration::from_millis(10),
        default_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn http_delivery_carries_the_body_headers_and_receiver_info_in_order() {
    let (url, mut received) = receiver(StatusCode::OK, Duration::ZERO).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    let key: Arc<str> = Arc::from("urn:sub:1");
    let ep = endpoint(&url, &[]);
    for i in 0..3 {
        notifier
            .send(&key, &ep, message(&format!("{{\"n\":{i}}}")))
            .unwrap();
    }
    for i in 0..3 {
        let (headers, body) = received.recv().await.unwrap();
        assert_eq!(body, format!("{{\"n\":{i}}}"));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-city"], "Guangzhou");
    }
    let events = log.wait_for("urn:sub:1", 6).await;
    assert_eq!(
        events,
        vec![
            Event::Sending,
            Event::Delivered,
            Event::Sending,
            Event::Delivered,
            Event::Sending,
            Event::Delivered
        ],
        "each message is reported before it goes out and after"
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_reported_failed() {
    let (url, mut received) = receiver(StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    notifier
        .send(&Arc::from("urn:sub:f"), &endpoint(&url, &[]), message("{}"))
        .unwrap();
    let events = log.wait_for("urn:sub:f", 2).await;
    assert_eq!(events[0], Event::Sending);
    assert!(
        matches!(&events[1], Event::Failed(r) if r.contains("500")),
        "{events:?}"
    );
    let mut attempts = 0;
    while received.try_recv().is_ok() {
        attempts += 1;
    }
    assert_eq!(attempts, 3, "max_attempts attempts in all");
    // An unreachable receiver fails the same way.
    notifier
        .send(
            &Arc::from("urn:sub:gone"),
            &endpoint("http://127.0.0.1:9/notify", &[]),
            message("{}"),
        )
        .unwrap();
    let events = log.wait_for("urn:sub:gone", 2).await;
    assert!(matches!(&events[1], Event::Failed(_)), "{events:?}");
}

#[tokio::test]
async fn a_hanging_receiver_fills_only_its_own_queue() {
    let (slow_url, _slow) = receiver(StatusCode::OK, Duration::from_secs(30)).await;
    let (fast_url, mut fast) = receiver(StatusCode::OK, Duration::ZERO).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    let slow: Arc<str> = Arc::from("urn:sub:slow");
    let slow_ep = endpoint(&slow_url, &[]);
    let mut rejected = 0;
    for _ in 0..20 {
        if notifier.send(&slow, &slow_ep, message("{}")).is_err() {
            rejected += 1;
        }
    }
    // One in flight, `queue_depth` waiting, the rest refused.
    assert!((14..=16).contains(&rejected), "rejected {rejected}");
    let fast_key: Arc<str> = Arc::from("urn:sub:fast");
    let started = Instant::now();
    notifier
        .send(&fast_key, &endpoint(&fast_url, &[]), message("{}"))
        .unwrap();
    fast.recv().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Subscribes to `topic` on the local MQTT broker and returns the messages.
async fn mqtt_subscriber(topic: &str) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let mut options = rumqttc::MqttOptions::new(
        format!("wuyang-test-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(e) => panic!("the MQTT broker on 127.0.0.1:1883 is not reachable: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
        .await
        .expect("no SUBACK from the MQTT broker")
        .unwrap();
    rx
}

#[tokio::test]
async fn mqtt_delivery_wraps_the_notification_with_its_metadata() {
    let topic = format!("wuyang/test/{}/alerts", std::process::id());
    let mut messages = mqtt_subscriber(&topic).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    for (i, version) in ["mqtt3.1.1", "mqtt5.0"].into_iter().enumerate() {
        let ep = endpoint(
            &format!("mqtt://127.0.0.1:1883/{topic}"),
            &[("MQTT-QoS", "1"), ("MQTT-Version", version)],
        );
        assert!(matches!(&ep.target, Target::Mqtt(m) if m.qos == 1));
        notifier
            .send(
                &Arc::from(format!("urn:sub:mqtt{i}")),
                &ep,
                message(&format!("{{\"type\":\"Notification\",\"n\":{i}}}")),
            )
            .unwrap();
        let payload = tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .expect("no MQTT message")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["body"]["n"], i, "{version}");
        assert_eq!(v["metadata"]["Content-Type"], "application/json");
        assert_eq!(v["metadata"]["X-City"], "Guangzhou");
        let events = log.wait_for(&format!("urn:sub:mqtt{i}"), 2).await;
        assert_eq!(events, [Event::Sending, Event::Delivered]);
    }
}

#[tokio::test]
async fn within_the_cooldown_after_a_failure_notifications_are_dropped() {
    let (url, mut received) = receiver(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(
        NotifierConfig {
            max_attempts: 1,
            ..config()
        },
        log.clone(),
    );
    let mut ep = (*endpoint(&url, &[])).clone();
    ep.cooldown = Some(Duration::from_secs(30));
    let ep = Arc::new(ep);
    let key: Arc<str> = Arc::from("urn:sub:cool");
    notifier.send(&key, &ep, message("{\"n\":1}")).unwrap();
    let events = log.wait_for("urn:sub:cool", 2).await;
    assert!(matches!(&events[1], Event::Failed(_)), "{events:?}");
    notifier.send(&key, &ep, message("{\"n\":2}")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        log.events("urn:sub:cool").len(),
        2,
        "the second was not attempted"
    );
    assert!(received.recv().await.is_some());
    assert!(
        received.try_recv().is_err(),
        "one request reached the receiver"
    );
}

/// A receiver that redirects is not followed: the notification goes to the
/// endpoint the subscription names, and a 3xx answer is a failed delivery
/// (a redirected POST would lose its body).
#[tokio::test]
async fn a_redirect_is_a_failed_delivery_not_followed() {
    let (target, mut redirected) = receiver(StatusCode::OK, Duration::ZERO).await;
    let app = Router::new().route(
        "/notify",
        post(move || {
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("Location", target)]) }
        }),
    );
    let addr = serve(app).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    // The plain path, then reqwest's (a fragment sends it there).
    for (key, suffix) in [("urn:sub:moved", ""), ("urn:sub:moved2", "#reqwest")] {
        notifier
            .send(
                &Arc::from(key),
                &endpoint(&format!("http://{addr}/notify{suffix}"), &[]),
                message("{}"),
            )
            .unwrap();
        let events = log.wait_for(key, 2).await;
        assert!(
            matches!(&events[1], Event::Failed(r) if r.contains("307")),
            "{key}: {events:?}"
        );
        assert!(
            redirected.try_recv().is_err(),
            "{key}: the redirect was followed"
        );
    }
}

/// Credentials in an endpoint's URL go out as Basic authentication, and a
/// fragment is left out of the request.
#[tokio::test]
async fn credentials_in_the_url_are_sent_as_basic_authentication() {
    let (url, mut received) = receiver(StatusCode::OK, Duration::ZERO).await;
    let with_credentials = url.replace("http://", "http://city:secret@") + "#part";
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    notifier
        .send(
            &Arc::from("urn:sub:auth"),
            &endpoint(&with_credentials, &[]),
            message("{}"),
        )
        .unwrap();
    let events = log.wait_for("urn:sub:auth", 2).await;
    assert_eq!(events[1], Event::Delivered, "{events:?}");
    let (headers, _) = received.recv().await.unwrap();
    // base64("city:secret")
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Basic Y2l0eTpzZWNyZXQ=")
    );
}

/// A `User-Agent` in receiverInfo replaces the notifier's own; `Accept`
/// defaults to `*/*` (on both HTTP paths, as reqwest sends them).
#[tokio::test]
async fn receiver_info_replaces_the_default_user_agent() {
    let (url, mut received) = receiver(StatusCode::OK, Duration::ZERO).await;
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    for (key, url) in [
        ("urn:sub:ua", url.clone()),
        ("urn:sub:ua2", url + "#reqwest"),
    ] {
        let mut ep = (*endpoint(&url, &[])).clone();
        ep.receiver_info = vec![("User-Agent".into(), "city-agent".into())];
        notifier
            .send(&Arc::from(key), &Arc::new(ep), message("{}"))
            .unwrap();
        let (headers, _) = received.recv().await.unwrap();
        let agents: Vec<_> = headers.get_all("user-agent").iter().collect();
        assert_eq!(agents, ["city-agent"], "{key}");
        assert_eq!(headers.get("accept").unwrap(), "*/*", "{key}");
    }
}

/// A connection to a receiver that keeps it open is closed by the notifier
/// once it has been idle for `idle_timeout`.
#[tokio::test]
async fn idle_connections_to_receivers_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(
        NotifierConfig {
            idle_timeout: Duration::from_millis(200),
            ..config()
        },
        log.clone(),
    );
    notifier
        .send(
            &Arc::from("urn:sub:idle"),
            &endpoint(&format!("http://{addr}/notify"), &[]),
            message("{}"),
        )
        .unwrap();
    let (mut socket, _) = listener.accept().await.unwrap();
    // Read the request (small: it arrives in one piece or a few), answer,
    // and keep the connection open.
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"{}") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the request ended early");
        request.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let events = log.wait_for("urn:sub:idle", 2).await;
    assert_eq!(events[1], Event::Delivered, "{events:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection is still open: {closed:?}"
    );
}

/// The variable that tells a run of this binary it is the child of
/// [`behind_a_proxy_from_the_environment_notifications_go_through_it`].
const PROXY_CHILD: &str = "WUYANG_NOTIFY_PROXY_CHILD";

/// Behind an HTTP proxy named in the environment (as reqwest reads it),
/// plain `http://` notifications go through the proxy too. The environment
/// is set for a second run of this test binary, which runs only
/// [`proxied_delivery_child`]: setting it in this process would need
/// `unsafe`. The "proxy" is a receiver here that answers every request; the
/// endpoint is a port nothing listens on, so only a request sent through the
/// proxy is delivered.
#[tokio::test]
async fn behind_a_proxy_from_the_environment_notifications_go_through_it() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let app = Router::new().fallback(move |req: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(req.uri().to_string());
            StatusCode::OK
        }
    });
    let proxy = serve(app).await;
    let exe = std::env::current_exe().unwrap();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "proxied_delivery_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(PROXY_CHILD, "1")
            .env("HTTP_PROXY", format!("http://{proxy}"))
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    // The proxy got the request in absolute form, for the endpoint.
    assert_eq!(seen.recv().await.unwrap(), "http://127.0.0.1:9/notify");
}

/// The child run of the test above (ignored in a normal run).
#[tokio::test]
#[ignore = "run by behind_a_proxy_from_the_environment_notifications_go_through_it"]
async fn proxied_delivery_child() {
    assert!(
        std::env::var_os(PROXY_CHILD).is_some(),
        "run by the parent test"
    );
    let log = Arc::new(Log::default());
    let notifier = Notifier::new(config(), log.clone());
    notifier
        .send(
            &Arc::from("urn:sub:proxied"),
            &endpoint("http://127.0.0.1:9/notify", &[]),
            message("{}"),
        )
        .unwrap();
    let events = log.wait_for("urn:sub:proxied", 2).await;
    assert_eq!(events.get(1), Some(&Event::Delivered), "{events:?}");
}
