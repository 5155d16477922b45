//! The notification scenarios of `wuyang bench`: 100 active subscriptions,
//! updates that each match one of them (partial attribute updates, or batch
//! upserts of ten entities as the city simulator sends), delivered to a
//! receiver in this process over HTTP or through the MQTT broker; the
//! latency is taken from the update's acknowledgement to the notification's
//! arrival.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::bench::{connect, request, send, template_entity};

/// Subscriptions in the scenario.
const SUBSCRIPTIONS: u64 = 100;
/// Entities per subscription.
const PER_SUBSCRIPTION: u64 = 10;

/// Where notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Mqtt,
}

/// What the scenario measured.
pub struct NotifyResult {
    pub updates: u64,
    pub update_errors: u64,
    pub delivered: u64,
    /// From the first update to the last delivery.
    pub elapsed: Duration,
    /// Acknowledgement to delivery, sorted, microseconds.
    pub latencies_us: Vec<u64>,
}

impl NotifyResult {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Times in microseconds since the scenario started, per update (0 = none).
struct Clock {
    start: Instant,
    acked: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    delivered: AtomicU64,
}

impl Clock {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    /// Records the arrival of the notifications in `body`.
    fn arrived(&self, body: &[u8]) {
        let now = self.now();
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let v = v.get("body").unwrap_or(&v);
        for item in v["data"].as_array().into_iter().flatten() {
            if let Some(i) = item["aProperty"]["value"].as_f64() {
                let i = i as usize;
                if let Some(slot) = self.received.get(i)
                    && slot.swap(now, Ordering::Relaxed) == 0
                {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn http_receiver(clock: Arc<Clock>) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: Bytes| {
            let clock = clock.clone();
            async move {
                clock.arrived(&body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/notify"))
}

async fn mqtt_receiver(clock: Arc<Clock>, topic: &str) -> anyhow::Result<()> {
    let mut options = rumqttc::MqttOptions::new(
        format!("wuyang-bench-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 1024);
    client
        .subscribe(format!("{topic}/#"), rumqttc::QoS::AtMostOnce)
        .await?;
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut ready_tx = Some(ready_tx);
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    clock.arrived(&p.payload);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("MQTT receiver: {e}");
                    return;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), ready)
        .await
        .context("no MQTT broker on 127.0.0.1:1883 (bash scripts/services.sh starts one)")??;
    Ok(())
}

/// Runs the scenario: `total` updates over `connections` connections
/// against the broker at `addr`: one partial attribute update per request
/// when `batch` is 1, else batch upserts (`options=update`) of `batch`
/// entities, as the city simulator sends its readings.
pub async fn run(
    addr: SocketAddr,
    connections: usize,
    total: u64,
    transport: Transport,
    batch: u64,
) -> anyhow::Result<NotifyResult> {
    let batch = batch.max(1);
    let clock = Arc::new(Clock {
        start: Instant::now(),
        acked: (0..total).map(|_| AtomicU64::new(0)).collect(),
        received: (0..total).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
    });
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        clock.start.elapsed().as_nanos()
    );
    let topic = format!("wuyang/bench/{run_id}");
    let http_uri = match transport {
        Transport::Http => Some(http_receiver(clock.clone()).await?),
        Transport::Mqtt => {
            mqtt_receiver(clock.clone(), &topic).await?;
            None
        }
    };
    let prefix = match transport {
        Transport::Http => "http",
        Transport::Mqtt => "mqtt",
    };
    let mut admin = connect(addr).await?;
    for k in 0..SUBSCRIPTIONS {
        let uri = match &http_uri {
            Some(u) => u.clone(),
            None => format!("mqtt://127.0.0.1:1883/{topic}/{k}"),
        };
        let sub = json!({
            "id": format!("urn:ngsi-ld:Subscription:bench:{prefix}:{run_id}:{k}"),
            "type": "Subscription",
            "entities": [{"type": "Sensor", "idPattern": format!("^urn:ngsi-ld:Bench:{prefix}:{k}:")}],
            "watchedAttributes": ["aProperty"],
            "notification": {"endpoint": {"uri": uri}, "attributes": ["aProperty"]},
        });
        let (status, body) = send(
            &mut admin,
            request(
                Method::POST,
                "/ngsi-ld/v1/subscriptions".into(),
                Some(&sub),
                true,
            ),
        )
        .await
        .with_context(|| format!("creating subscription {k}"))?;
        if status != 201 {
            bail!(
                "creating a subscription failed: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let targets: Vec<Value> = (0..SUBSCRIPTIONS * PER_SUBSCRIPTION)
        .map(|n| {
            template_entity(
                &format!(
                    "urn:ngsi-ld:Bench:{prefix}:{}:{}",
                    n % SUBSCRIPTIONS,
                    n / SUBSCRIPTIONS
                ),
                "Sensor",
                n,
            )
        })
        .collect();
    let (status, body) = send(
        &mut admin,
        request(
            Method::POST,
            "/ngsi-ld/v1/entityOperations/upsert".into(),
            Some(&Value::Array(targets)),
            true,
        ),
    )
    .await
    .context("loading the targets")?;
    if !(200..300).contains(&status) {
        bail!(
            "loading the targets failed: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The creations above notify too (attributeCreated): let them pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    clock.delivered.store(0, Ordering::Relaxed);
    for r in &clock.received {
        r.store(0, Ordering::Relaxed);
    }

    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first = clock.now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (counter, errors, clock) = (counter.clone(), errors.clone(), clock.clone());
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let id = |i: u64| {
                let n = i % (SUBSCRIPTIONS * PER_SUBSCRIPTION);
                format!(
                    "urn:ngsi-ld:Bench:{prefix}:{}:{}",
                    n % SUBSCRIPTIONS,
                    n / SUBSCRIPTIONS
                )
            };
            let reading = |i: u64| json!({"type": "Property", "value": i as f64, "observedAt": "2024-03-01T09:00:00Z", "unitCode": "CEL"});
            loop {
                let first = counter.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    break;
                }
                let updates = first..(first + batch).min(total);
                let req = if batch == 1 {
                    let path = format!("/ngsi-ld/v1/entities/{}/attrs/aProperty", id(first));
                    request(Method::PATCH, path, Some(&reading(first)), true)
                } else {
                    let entities: Vec<Value> = updates
                        .clone()
                        .map(|i| json!({"id": id(i), "type": "Sensor", "aProperty": reading(i)}))
                        .collect();
                    request(
                        Method::POST,
                        "/ngsi-ld/v1/entityOperations/upsert?options=update".into(),
                        Some(&Value::Array(entities)),
                        true,
                    )
                };
                let (status, _) = send(&mut sender, req).await.context("updating")?;
                let now = clock.now();
                for i in updates.clone() {
                    clock.acked[i as usize].store(now, Ordering::Relaxed);
                }
                if status != 204 {
                    errors.fetch_add(updates.end - updates.start, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Wait for the stragglers: until everything arrived or nothing more
    // arrives for two seconds.
    let mut last = clock.delivered.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while last < total && quiet.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = clock.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    let mut latencies_us = Vec::with_capacity(total as usize);
    let mut latest = first;
    for (ack, got) in clock.acked.iter().zip(&clock.received) {
        let (ack, got) = (ack.load(Ordering::Relaxed), got.load(Ordering::Relaxed));
        if ack > 0 && got > 0 {
            // A notification can arrive before the client reads the
            // acknowledgement: that counts as no delay.
            latencies_us.push(got.saturating_sub(ack));
            latest = latest.max(got);
        }
    }
    latencies_us.sort_unstable();
    Ok(NotifyResult {
        updates: total,
        update_errors: errors.load(Ordering::Relaxed),
        delivered: clock.delivered.load(Ordering::Relaxed),
        elapsed: Duration::from_micros(latest.saturating_sub(first).max(1)),
        latencies_us,
    })
}
