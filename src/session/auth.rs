//! SASL responses of the mechanisms warren offers: PLAIN and AMQPLAIN,
//! and EXTERNAL on TLS connections (the client certificate names the user;
//! the session handles it, there is no response to decode).

use crate::protocol::{AmqpError, FieldValue, Reader};
use bytes::{BufMut, Bytes, BytesMut};

/// The mechanisms advertised in `connection.start`, in RabbitMQ's order.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// On TLS connections, with RabbitMQ's rabbitmq_auth_mechanism_ssl.
pub const MECHANISMS_TLS: &str = "PLAIN AMQPLAIN EXTERNAL";

/// Credentials extracted from a `connection.start-ok` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    /// None: authenticated by other means (a verified client certificate).
    pub password: Option<Vec<u8>>,
}

/// What a refused login is told (the log says why).
pub fn refused(mechanism: &str) -> AmqpError {
    AmqpError::access_refused(format!(
        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
    ))
}

/// Decodes a SASL response. An unknown mechanism is a hard error as in
/// RabbitMQ; a malformed response is an access refusal.
pub fn parse_response(mechanism: &[u8], response: &[u8]) -> Result<Credentials, AmqpError> {
    match mechanism {
        b"PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|&b| b == 0);
            let (Some(_authz), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(refused("PLAIN"));
            };
            Ok(Credentials {
                user: String::from_utf8_lossy(user).into_owned(),
                password: Some(pass.to_vec()),
            })
        }
        b"AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = BytesMut::with_capacity(response.len() + 4);
            framed.put_u32(response.len() as u32);
            framed.put_slice(response);
            let table = Reader::new(Bytes::from(framed))
                .table()
                .map_err(|_| refused("AMQPLAIN"))?;
            let text = |k: &str| match table.get(k) {
                Some(FieldValue::LongStr(s)) => Some(s.as_bytes().to_vec()),
                Some(FieldValue::ByteArray(b)) => Some(b.to_vec()),
                _ => None,
            };
            match (text("LOGIN"), text("PASSWORD")) {
                (Some(u), Some(p)) => Ok(Credentials {
                    user: String::from_utf8_lossy(&u).into_owned(),
                    password: Some(p),
                }),
                _ => Err(refused("AMQPLAIN")),
            }
        }
        other => Err(AmqpError::command_invalid(format!(
            "unknown authentication mechanism '{}'",
            String::from_utf8_lossy(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let c = parse_response(b"PLAIN", b"\0guest\0secret").unwrap();
        assert_eq!(c.user, "guest");
        assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
        assert!(parse_response(b"PLAIN", b"guest").is_err());
    }

    #[test]
    fn amqplain() {
        let mut b = BytesMut::new();
        for (k, v) in [("LOGIN", "u"), ("PASSWORD", "p")] {
            b.put_u8(k.len() as u8);
            b.put_slice(k.as_bytes());
            b.put_u8(b'S');
            b.put_u32(v.len() as u32);
            b.put_slice(v.as_bytes());
        }
        let c = parse_response(b"AMQPLAIN", &b).unwrap();
        assert_eq!(c.user, "u");
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn unknown_mechanism_is_hard() {
        let e = parse_response(b"EXTERNAL", b"").unwrap_err();
        assert!(e.is_hard());
    }
}
