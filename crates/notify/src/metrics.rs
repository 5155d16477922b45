//! Delivery metrics (Prometheus).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Transport {
    transport: &'static str,
}

pub(crate) struct Metrics {
    sent: Family<Transport, Counter>,
    failed: Family<Transport, Counter>,
    pub(crate) retries: Counter,
    pub(crate) dropped_queue_full: Counter,
    pub(crate) dropped_cooldown: Counter,
    latency: Family<Transport, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sent: Family::default(),
            failed: Family::default(),
            retries: Counter::default(),
            dropped_queue_full: Counter::default(),
            dropped_cooldown: Counter::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
                ])
            }),
        }
    }
}

impl Metrics {
    pub(crate) fn delivered(&self, transport: &'static str, latency: Duration) {
        let label = Transport { transport };
        self.sent.get_or_create(&label).inc();
        self.latency
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
    }

    pub(crate) fn failed(&self, transport: &'static str) {
        self.failed.get_or_create(&Transport { transport }).inc();
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "wuyang_notifications_delivered",
            "Notifications the receiver accepted",
            self.sent.clone(),
        );
        registry.register(
            "wuyang_notifications_failed",
            "Notifications given up after every attempt failed",
            self.failed.clone(),
        );
        registry.register(
            "wuyang_notification_retries",
            "Delivery attempts repeated after a failure",
            self.retries.clone(),
        );
        registry.register(
            "wuyang_notifications_dropped_queue_full",
            "Notifications dropped because their subscription's queue was full",
            self.dropped_queue_full.clone(),
        );
        registry.register(
            "wuyang_notifications_dropped_cooldown",
            "Notifications dropped within an endpoint's cooldown after a failure",
            self.dropped_cooldown.clone(),
        );
        registry.register(
            "wuyang_notification_latency_seconds",
            "Time from the change's commit to the receiver's acceptance",
            self.latency.clone(),
        );
    }
}
