//! The few ONNX protobuf messages an exported model needs, written with the
//! crate's own protobuf encoder ([`crate::protobuf`]). The field numbers
//! are those of `onnx/onnx.proto`; tests read the files back with
//! independent decoders (tract's prost-generated types, Python's `onnx`)
//! and run them in real runtimes.

use crate::protobuf::Message;

/// `TensorProto.DataType` values.
pub const FLOAT: i64 = 1;
pub const INT64: i64 = 7;

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
