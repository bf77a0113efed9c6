//! Protocol-level errors carry the AMQP reply code a peer must receive.
//!
//! Decoding never panics: anything malformed becomes an [`AmqpError`], and the
//! session turns it into `channel.close` (soft codes) or `connection.close`
//! (hard codes) with RabbitMQ's text format `"NAME - detail"`.

use std::borrow::Cow;
use std::fmt;

/// AMQP 0-9-1 reply codes (spec constants plus the ones RabbitMQ uses).
pub mod reply {
    pub const SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;

    /// The symbolic name RabbitMQ puts in front of the reply text.
    pub fn name(code: u16) -> &'static str {
        match code {
            SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "UNKNOWN",
        }
    }

    /// Hard errors close the connection; soft errors close only the channel.
    pub fn is_hard(code: u16) -> bool {
        !matches!(
            code,
            CONTENT_TOO_LARGE
                | NO_ROUTE
                | NO_CONSUMERS
                | ACCESS_REFUSED
                | NOT_FOUND
                | RESOURCE_LOCKED
                | PRECONDITION_FAILED
        )
    }
}

/// An error to report to the peer with `channel.close` or `connection.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// One of the [`reply`] codes.
    pub code: u16,
    /// Detail text without the symbolic prefix; see [`AmqpError::reply_text`].
    pub text: Cow<'static, str>,
    /// Class and method that caused the error (0, 0 when not tied to a method).
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        AmqpError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attaches the offending method, as RabbitMQ reports it in `*.close`.
    pub fn with_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    pub fn frame(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::FRAME_ERROR, text)
    }
    pub fn syntax(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::SYNTAX_ERROR, text)
    }
    pub fn command_invalid(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::COMMAND_INVALID, text)
    }
    pub fn unexpected_frame(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::UNEXPECTED_FRAME, text)
    }
    pub fn not_found(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::NOT_FOUND, text)
    }
    pub fn precondition(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::PRECONDITION_FAILED, text)
    }
    pub fn access_refused(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::ACCESS_REFUSED, text)
    }
    pub fn resource_locked(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::RESOURCE_LOCKED, text)
    }
    pub fn not_allowed(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::NOT_ALLOWED, text)
    }
    pub fn not_implemented(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::NOT_IMPLEMENTED, text)
    }
    pub fn internal(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(reply::INTERNAL_ERROR, text)
    }

    pub fn is_hard(&self) -> bool {
        reply::is_hard(self.code)
    }

    /// The reply text as RabbitMQ formats it: `"NOT_FOUND - no queue 'q' in vhost '/'"`,
    /// truncated to fit a shortstr.
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", reply::name(self.code), self.text);
        if s.len() > 255 {
            let mut cut = 255;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

pub type Result<T> = std::result::Result<T, AmqpError>;
