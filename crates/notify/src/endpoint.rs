//! Notification endpoints (clause 5.2.15): where a notification goes and how.

use std::time::Duration;

/// The MQTT protocol version to publish with (notifierInfo `MQTT-Version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (`mqtt3.1.1`).
    V311,
    /// MQTT 5.0 (`mqtt5.0`, the default).
    V5,
}

/// An MQTT broker, topic and publishing options (clause 7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    /// Broker host.
    pub host: String,
    /// Broker port (1883 by default).
    pub port: u16,
    /// The topic: the URI's path without the leading slash.
    pub topic: String,
    /// User name, when the URI has one.
    pub username: Option<String>,
    /// Password, when the URI has one.
    pub password: Option<String>,
    /// Quality of service 0, 1 or 2 (notifierInfo `MQTT-QoS`, default 0).
    pub qos: u8,
    /// Protocol version.
    pub version: MqttVersion,
}

/// Where notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// HTTP POST to this `http://` or `https://` URL (parsed once, not
    /// for every notification).
    Http(reqwest::Url),
    /// An MQTT publication.
    Mqtt(MqttEndpoint),
}

impl Target {
    /// Whether notifications can reach it: an MQTT PUBLISH names one topic,
    /// without the wildcards `+` and `#` (MQTT 3.1.1 and 5.0, 4.7.1).
    pub fn check_publishable(&self, uri: &str) -> Result<(), EndpointError> {
        match self {
            Target::Mqtt(m) if m.topic.contains(['+', '#']) => Err(EndpointError::Invalid(
                format!("{uri} (a topic to publish to holds no wildcard + or #)"),
            )),
            _ => Ok(()),
        }
    }
}

/// A parsed endpoint with its delivery options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to deliver.
    pub target: Target,
    /// Extra headers (HTTP) or metadata members (MQTT): `receiverInfo`.
    pub receiver_info: Vec<(String, String)>,
    /// How long to wait for the receiver before counting a failure.
    pub timeout: Option<Duration>,
    /// After a failure, notifications within this window are dropped.
    pub cooldown: Option<Duration>,
}

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The URI is not a URI with a scheme.
    #[error("endpoint uri {0:?} is not a valid URI")]
    Invalid(String),
    /// The scheme is not one this broker delivers to.
    #[error("endpoint scheme {0:?} is not supported (http, https, mqtt)")]
    Scheme(String),
    /// A receiverInfo entry cannot be sent.
    #[error("receiverInfo: {0}")]
    ReceiverInfo(String),
    /// A notifierInfo entry has a value the spec does not allow.
    #[error("notifierInfo {key}: {reason}")]
    NotifierInfo {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Parses an endpoint URI with its `notifierInfo` key-value pairs.
pub fn parse_target(
    uri: &str,
    notifier_info: &[(String, String)],
) -> Result<Target, EndpointError> {
    let invalid = || EndpointError::Invalid(uri.to_string());
    let (scheme, rest) = uri.split_once("://").ok_or_else(invalid)?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(invalid());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let url = reqwest::Url::parse(uri).map_err(|_| invalid())?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid());
            }
            Ok(Target::Http(url))
        }
        "mqtt" => {
            let (authority, path) = rest.split_once('/').ok_or_else(invalid)?;
            if path.is_empty() {
                return Err(EndpointError::Invalid(format!("{uri} (no topic)")));
            }
            let (userinfo, hostport) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (host, port) = split_host_port(hostport).ok_or_else(invalid)?;
            let (username, password) = match userinfo {
                None => (None, None),
                Some(u) => {
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    match u.split_once(':') {
                        Some((user, pass)) => (Some(decode(user)), Some(decode(pass))),
                        None => (Some(decode(u)), None),
                    }
                }
            };
            let mut qos = 0;
            let mut version = MqttVersion::V5;
            for (key, value) in notifier_info {
                match key.as_str() {
                    "MQTT-QoS" => {
                        qos = match value.as_str() {
                            "0" => 0,
                            "1" => 1,
                            "2" => 2,
                            _ => {
                                return Err(EndpointError::NotifierInfo {
                                    key: key.clone(),
                                    reason: format!("{value:?} is not 0, 1 or 2"),
                                });
                            }
                        }
                    }
                    "MQTT-Version" => {
                        version = match value.as_str() {
                            "mqtt3.1.1" => MqttVersion::V311,
                            "mqtt5.0" => MqttVersion::V5,
                            _ => {
                                return Err(EndpointError::NotifierInfo {
                                    key: key.clone(),
                                    reason: format!("{value:?} is not mqtt3.1.1 or mqtt5.0"),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            Ok(Target::Mqtt(MqttEndpoint {
                host: host.to_string(),
                port: port.unwrap_or(1883),
                topic: path.to_string(),
                username,
                password,
                qos,
                version,
            }))
        }
        other => Err(EndpointError::Scheme(other.to_string())),
    }
}

/// Checks that every receiverInfo pair can travel as an HTTP header (MQTT
/// carries them in the metadata, where any string goes).
pub fn check_receiver_info(
    target: &Target,
    pairs: &[(String, String)],
) -> Result<(), EndpointError> {
    if matches!(target, Target::Mqtt(_)) {
        return Ok(());
    }
    for (key, value) in pairs {
        if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Err(EndpointError::ReceiverInfo(format!(
                "{key:?} is not an HTTP header name"
            )));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(EndpointError::ReceiverInfo(format!(
                "the value of {key} is not a valid HTTP header value"
            )));
        }
    }
    Ok(())
}

/// Splits `host[:port]` (IPv6 hosts in brackets).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn http_and_mqtt_endpoints_parse() {
        assert_eq!(
            parse_target("http://127.0.0.1:8080/notify", &[]),
            Ok(Target::Http(
                "http://127.0.0.1:8080/notify".parse().unwrap()
            ))
        );
        let Ok(Target::Mqtt(m)) = parse_target(
            "mqtt://user:p%40ss@broker.local:1884/city/alerts",
            &info(&[("MQTT-QoS", "1"), ("MQTT-Version", "mqtt3.1.1")]),
        ) else {
            panic!("not mqtt");
        };
        assert_eq!(m.host, "broker.local");
        assert_eq!(m.port, 1884);
        assert_eq!(m.topic, "city/alerts");
        assert_eq!(m.username.as_deref(), Some("user"));
        assert_eq!(m.password.as_deref(), Some("p@ss"));
        assert_eq!((m.qos, m.version), (1, MqttVersion::V311));
        let Ok(Target::Mqtt(m)) = parse_target("mqtt://[::1]/t", &[]) else {
            panic!("not mqtt");
        };
        assert_eq!((m.host.as_str(), m.port, m.qos), ("::1", 1883, 0));
        assert_eq!(m.version, MqttVersion::V5);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for uri in [
            "",
            "notauri",
            "http://",
            "http:// spaces/x",
            "mqtt://host",
            "mqtt://host/",
            "mqtt://host:notaport/t",
            "mqtt://host:0/t",
            "mqtt://:1883/t",
        ] {
            assert!(
                matches!(parse_target(uri, &[]), Err(EndpointError::Invalid(_))),
                "{uri}"
            );
        }
        for uri in ["mqtt://h/a/b/#", "mqtt://h/a/+/b"] {
            let target = parse_target(uri, &[]).unwrap();
            assert!(
                matches!(
                    target.check_publishable(uri),
                    Err(EndpointError::Invalid(_))
                ),
                "{uri}"
            );
        }
        assert_eq!(
            parse_target("ftp://host/x", &[]),
            Err(EndpointError::Scheme("ftp".into()))
        );
        assert!(matches!(
            parse_target("mqtts://host/x", &[]),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            parse_target("mqtt://h/t", &info(&[("MQTT-QoS", "3")])),
            Err(EndpointError::NotifierInfo { .. })
        ));
        assert!(matches!(
            parse_target("mqtt://h/t", &info(&[("MQTT-Version", "4")])),
            Err(EndpointError::NotifierInfo { .. })
        ));
    }
}
