//! The few ONNX protobuf messages an exported model needs, encoded by hand.
//!
//! Protobuf's wire format is small: every field is a key (`field << 3 |
//! wire type`) as a varint, then a varint (integers), 4 little-endian bytes
//! (floats) or a length-prefixed run of bytes (strings, packed lists and
//! nested messages). Writing it here costs a hundred lines where a protobuf
//! crate would bring a code generator (and `protoc`) into the build. The
//! field numbers are those of `onnx/onnx.proto`; tests read the files back
//! with independent decoders (tract's prost-generated types, Python's
//! `onnx`) and run them in real runtimes.

/// Wire types of the protobuf encoding.
const VARINT: u8 = 0;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `TensorProto.DataType` values.
pub const FLOAT: i64 = 1;
pub const INT64: i64 = 7;

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

/// `TensorProto`: a named constant, its values as `raw_data` (little-endian).
pub fn tensor_f32(name: &str, dims: &[usize], values: &[f32]) -> Message {
    debug_assert_eq!(dims.iter().product::<usize>(), values.len());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, FLOAT, &raw)
}

pub fn tensor_i64(name: &str, dims: &[usize], values: &[i64]) -> Message {
    debug_assert_eq!(dims.iter().product::<usize>(), values.len());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, INT64, &raw)
}

fn tensor(name: &str, dims: &[usize], data_type: i64, raw: &[u8]) -> Message {
    let mut t = Message::new();
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    t.packed_ints(1, &dims).int(2, data_type).string(8, name).bytes(9, raw);
    t
}

/// An attribute of a node (`AttributeProto`, its `type` set as required
/// since IR version 3).
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

fn attribute(name: &str, value: &Attr) -> Message {
    let mut a = Message::new();
    a.string(1, name);
    match value {
        Attr::Float(f) => a.float(2, *f).int(20, 1),
        Attr::Int(i) => a.int(3, *i).int(20, 2),
        Attr::Ints(is) => a.packed_ints(8, is).int(20, 7),
    };
    a
}

/// `NodeProto`: one operator of the default domain.
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> Message {
    let mut n = Message::new();
    for i in inputs {
        n.string(1, i);
    }
    for o in outputs {
        n.string(2, o);
    }
    n.string(3, name).string(4, op_type);
    for (key, value) in attrs {
        n.message(5, &attribute(key, value));
    }
    n
}

/// One dimension of a shape: a number, or a name for a size that varies
/// (the batch).
pub enum Dim<'a> {
    Fixed(usize),
    Named(&'a str),
}

/// `ValueInfoProto` of a float32 tensor of `dims`.
pub fn value_info(name: &str, dims: &[Dim]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let mut dim = Message::new();
        match d {
            Dim::Fixed(n) => dim.int(1, *n as i64),
            Dim::Named(p) => dim.string(2, p),
        };
        shape.message(1, &dim);
    }
    let mut tensor_type = Message::new();
    tensor_type.int(1, FLOAT).message(2, &shape);
    let mut ty = Message::new();
    ty.message(1, &tensor_type);
    let mut v = Message::new();
    v.string(1, name).message(2, &ty);
    v
}

/// `StringStringEntryProto`, as `metadata_props` holds them.
pub fn entry(key: &str, value: &str) -> Message {
    let mut e = Message::new();
    e.string(1, key).string(2, value);
    e
}

/// `OperatorSetIdProto` of the default (`ai.onnx`) domain.
pub fn opset(version: i64) -> Message {
    let mut o = Message::new();
    o.string(1, "").int(2, version);
    o
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
