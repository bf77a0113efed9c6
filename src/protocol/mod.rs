//! AMQP 0-9-1 wire format with RabbitMQ's extensions. Sans-IO, zero-copy over
//! `bytes::Bytes`, and total: every input decodes or yields an [`AmqpError`].

pub mod codec;
pub mod error;
pub mod fast;
pub mod frame;
pub mod methods;
pub mod properties;
pub mod table;
pub mod types;

pub use codec::{Reader, put_field_value, put_longstr, put_shortstr, put_table};
pub use error::{AmqpError, Result, reply};
pub use fast::{
    PublishFields, parse_basic_publish, write_basic_ack, write_basic_deliver, write_basic_get_ok,
    write_basic_nack, write_basic_return, write_content,
};
pub use frame::{
    CONTENT_HEADER_FIXED, ContentHeader, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
    FRAME_MIN_SIZE, FRAME_OVERHEAD, Frame, PROTOCOL_HEADER, RawFrame, check_frame, decode_frame, frame_at,
    header_fields, split_frames, write_body_frames, write_header_frame, write_heartbeat, write_method_frame,
};
pub use methods::Method;
pub use properties::{BasicProperties, PropsSummary, scan_properties};
pub use types::{FieldTable, FieldValue, LongStr, ShortStr};
