//! MQTT publishing: one client connection per broker, credentials and
//! protocol version, kept open and reconnected by its event-loop task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::endpoint::{MqttEndpoint, MqttVersion};

/// The largest message accepted by the clients.
const MAX_PACKET: usize = 16 * 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    version: MqttVersion,
}

enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

struct Connection {
    client: Client,
    connected: watch::Receiver<bool>,
}

#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<Key, Arc<Connection>>>,
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

fn client_id() -> String {
    format!(
        "wuyang-{}-{}",
        std::process::id(),
        NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Connections {
    fn connection(&self, m: &MqttEndpoint) -> Arc<Connection> {
        let key = Key {
            host: m.host.clone(),
            port: m.port,
            username: m.username.clone(),
            password: m.password.clone(),
            version: m.version,
        };
        let mut open = self.open.lock();
        open.entry(key)
            .or_insert_with(|| Arc::new(connect(m)))
            .clone()
    }

    /// Publishes `payload` to the endpoint's topic with its QoS. Succeeds
    /// once the client holds the message on a live connection.
    pub(crate) async fn publish(
        &self,
        m: &MqttEndpoint,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), String> {
        let conn = self.connection(m);
        let mut connected = conn.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|c| *c))
            .await
            .map_err(|_| format!("no connection to the MQTT broker {}:{}", m.host, m.port))?
            .map_err(|_| "the MQTT client stopped".to_string())?;
        let sent = match &conn.client {
            Client::V311(c) => {
                let qos = match m.qos {
                    0 => rumqttc::QoS::AtMostOnce,
                    1 => rumqttc::QoS::AtLeastOnce,
                    _ => rumqttc::QoS::ExactlyOnce,
                };
                tokio::time::timeout(timeout, c.publish(m.topic.clone(), qos, false, payload))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
            Client::V5(c) => {
                let qos = match m.qos {
                    0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                };
                tokio::time::timeout(timeout, c.publish(m.topic.clone(), qos, false, payload))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
        };
        sent.map_err(|_| "the MQTT client is congested".to_string())?
    }
}

fn connect(m: &MqttEndpoint) -> Connection {
    let (state, connected) = watch::channel(false);
    let client = match m.version {
        MqttVersion::V311 => {
            let mut options = rumqttc::MqttOptions::new(client_id(), m.host.clone(), m.port);
            options.set_keep_alive(Duration::from_secs(30));
            options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
            if let Some(user) = &m.username {
                options.set_credentials(user.clone(), m.password.clone().unwrap_or_default());
            }
            let (client, mut events) = rumqttc::AsyncClient::new(options, 1024);
            tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            let _ = state.send(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = state.send(false);
                            if state.is_closed() {
                                break;
                            }
                            tracing::debug!(error = %e, "MQTT connection lost; reconnecting");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            });
            Client::V311(client)
        }
        MqttVersion::V5 => {
            let mut options = rumqttc::v5::MqttOptions::new(client_id(), m.host.clone(), m.port);
            options.set_keep_alive(Duration::from_secs(30));
            options.set_max_packet_size(Some(MAX_PACKET as u32));
            if let Some(user) = &m.username {
                options.set_credentials(user.clone(), m.password.clone().unwrap_or_default());
            }
            let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 1024);
            tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => {
                            let _ = state.send(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = state.send(false);
                            if state.is_closed() {
                                break;
                            }
                            tracing::debug!(error = %e, "MQTT connection lost; reconnecting");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            });
            Client::V5(client)
        }
    };
    Connection { client, connected }
}
