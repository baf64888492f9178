//! A protobuf encoder for the few messages the trainer writes (ONNX models,
//! TensorBoard events).
//!
//! Protobuf's wire format is small: every field is a key (`field << 3 |
//! wire type`) as a varint, then a varint (integers), 8 or 4 little-endian
//! bytes (doubles, floats) or a length-prefixed run of bytes (strings,
//! packed lists and nested messages). Writing it here costs a hundred lines
//! where a protobuf crate would bring a code generator (and `protoc`) into
//! the build. Fields are written in the order they are added.

/// Wire types of the protobuf encoding.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One protobuf message being written: its fields' bytes, in order.
#[derive(Default)]
pub struct Message(Vec<u8>);

impl Message {
    pub fn new() -> Message {
        Message::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// An `int64` or `int32` field (a negative value takes ten bytes, as
    /// protobuf encodes it).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        self.varint(v as u64);
        self
    }

    pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }

    /// A `repeated int64` field, packed (the default encoding since proto3,
    /// and what every ONNX reader accepts for `dims` and `ints`).
    pub fn packed_ints(&mut self, field: u32, vs: &[i64]) -> &mut Self {
        let mut body = Message::new();
        for &v in vs {
            body.varint(v as u64);
        }
        self.bytes(field, &body.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_the_protobuf_encoding() {
        let mut m = Message::new();
        m.int(1, 150);
        // The encoding guide's own example: field 1, value 150.
        assert_eq!(m.into_bytes(), [0x08, 0x96, 0x01]);
        let mut m = Message::new();
        m.int(2, -1);
        let bytes = m.into_bytes();
        assert_eq!(bytes.len(), 11, "a negative int64 takes ten bytes after its key");
        assert_eq!(bytes[10], 0x01);
    }

    #[test]
    fn doubles_are_eight_fixed_bytes() {
        let mut m = Message::new();
        m.double(1, 1.5);
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(m.into_bytes(), want);
    }

    #[test]
    fn strings_and_floats_are_length_prefixed_and_fixed() {
        let mut m = Message::new();
        m.string(2, "testing").float(3, 1.0);
        let mut want = vec![0x12, 0x07];
        want.extend_from_slice(b"testing");
        want.push(0x1d);
        want.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(m.into_bytes(), want);
    }

    #[test]
    fn packed_ints_are_one_length_prefixed_field() {
        let mut m = Message::new();
        m.packed_ints(4, &[3, 270, 86942]);
        // The encoding guide's packed example.
        assert_eq!(m.into_bytes(), [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
    }
}
