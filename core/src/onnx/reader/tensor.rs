//! ONNX tensors (initializers, `Constant` values) and element types as tract's.

use crate::error::{NnzError, Result};
use crate::onnx::proto::TensorProto;
use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
use tract_core::internal::*;

/// tract's element type for an ONNX one, for the types a classifier's graph carries.
pub(crate) fn datum_type(code: i32) -> Result<DatumType> {
    let dt = match DataType::try_from(code) {
        Ok(DataType::Float) => f32::datum_type(),
        Ok(DataType::Double) => f64::datum_type(),
        Ok(DataType::Float16) => f16::datum_type(),
        Ok(DataType::Int64) => i64::datum_type(),
        Ok(DataType::Int32) => i32::datum_type(),
        Ok(DataType::Int16) => i16::datum_type(),
        Ok(DataType::Int8) => i8::datum_type(),
        Ok(DataType::Uint8) => u8::datum_type(),
        Ok(DataType::Uint16) => u16::datum_type(),
        Ok(DataType::Uint32) => u32::datum_type(),
        Ok(DataType::Uint64) => u64::datum_type(),
        Ok(DataType::Bool) => bool::datum_type(),
        Ok(other) => {
            return Err(NnzError::model(format!(
                "ONNX element type {other:?} is not supported (float, integer and bool tensors are)"
            )));
        }
        Err(_) => {
            return Err(NnzError::model(format!(
                "unknown ONNX element type code {code}"
            )));
        }
    };
    Ok(dt)
}

/// The ONNX element type code of a tract one (the inverse of [`datum_type`]).
fn onnx_type_code(dt: DatumType) -> Option<DataType> {
    let code = match dt {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I64 => DataType::Int64,
        DatumType::I32 => DataType::Int32,
        DatumType::I16 => DataType::Int16,
        DatumType::I8 => DataType::Int8,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::Bool => DataType::Bool,
        _ => return None,
    };
    Some(code)
}

/// Writes a tensor as an ONNX `TensorProto` named `name`, its values little-endian in
/// `raw_data` (what ONNX's own tools write). Symbolic sizes (a `Shape` of a symbolic input) are
/// refused: a file holds numbers.
pub(crate) fn tensor_to_proto(name: &str, t: &Tensor) -> Result<TensorProto> {
    let dt = t.datum_type();
    let code = onnx_type_code(dt).ok_or_else(|| {
        NnzError::model(format!(
            "output '{name}' has element type {dt:?}, which an ONNX tensor file cannot hold"
        ))
    })?;
    let plain = t.try_as_plain_ram().map_err(NnzError::model)?;
    // Every type `onnx_type_code` accepts is a plain number or a bool, stored without padding:
    // its bytes are the values in the machine's order.
    let bytes = plain.as_bytes();
    let raw_data = if cfg!(target_endian = "little") || dt.size_of() == 1 {
        bytes.to_vec()
    } else {
        bytes
            .chunks_exact(dt.size_of())
            .flat_map(|c| c.iter().rev().copied())
            .collect()
    };
    Ok(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: code as i32,
        name: name.to_string(),
        raw_data,
        ..TensorProto::default()
    })
}

/// Reads a tensor, checking that its data matches its dims.
pub(crate) fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let bad = |what: String| NnzError::model(format!("ONNX tensor '{}': {what}", t.name));
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(bad(
            "its data is in an external file; re-export the model with the data inside".into(),
        ));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| bad(format!("negative dimension in {:?}", t.dims)))
        })
        .collect::<Result<Vec<usize>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", t.dims)))?;
    let dt = datum_type(t.data_type)?;
    if !t.raw_data.is_empty() {
        let width = dt.size_of();
        if Some(t.raw_data.len()) != count.checked_mul(width) {
            return Err(bad(format!(
                "raw_data has {} bytes, shape {:?} of {dt:?} needs {}",
                t.raw_data.len(),
                t.dims,
                count.saturating_mul(width)
            )));
        }
        // SAFETY: the length matches `count` elements of `dt`, all of which are plain numbers
        // or bools; bool bytes are checked below.
        if dt == bool::datum_type() && t.raw_data.iter().any(|&b| b > 1) {
            return Err(bad("a bool holds a byte other than 0 or 1".into()));
        }
        return unsafe { Tensor::from_raw_dt(dt, &shape, &t.raw_data) }
            .map_err(|e| bad(e.to_string()));
    }
    let typed = |found: usize| -> Result<()> {
        if found == count {
            Ok(())
        } else {
            Err(bad(format!(
                "{found} values, shape {:?} needs {count}",
                t.dims
            )))
        }
    };
    let tensor = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => {
            typed(t.float_data.len())?;
            Tensor::from_shape(&shape, &t.float_data)
        }
        Ok(DataType::Double) => {
            typed(t.double_data.len())?;
            Tensor::from_shape(&shape, &t.double_data)
        }
        Ok(DataType::Int64) => {
            typed(t.int64_data.len())?;
            Tensor::from_shape(&shape, &t.int64_data)
        }
        Ok(DataType::Uint64 | DataType::Uint32) => {
            typed(t.uint64_data.len())?;
            Tensor::from_shape(&shape, &t.uint64_data)
                .and_then(|x| x.cast_to_dt(dt).map(|c| c.into_owned()))
        }
        Ok(_) => {
            // int32, int16, int8, uint16, uint8, bool and float16 (as bits) live in int32_data.
            typed(t.int32_data.len())?;
            if dt == f16::datum_type() {
                let halves: Vec<f16> = t
                    .int32_data
                    .iter()
                    .map(|&b| f16::from_bits(b as u16))
                    .collect();
                Tensor::from_shape(&shape, &halves)
            } else {
                Tensor::from_shape(&shape, &t.int32_data)
                    .and_then(|x| x.cast_to_dt(dt).map(|c| c.into_owned()))
            }
        }
        Err(_) => return Err(bad(format!("unknown element type code {}", t.data_type))),
    };
    tensor.map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tensors_read_back_equal() {
        let floats = Tensor::from_shape(&[2, 2], &[1.5f32, -0.0, f32::INFINITY, 3.0]).unwrap();
        let ints = Tensor::from_shape(&[3], &[-7i64, 0, 1 << 40]).unwrap();
        let bools = Tensor::from_shape(&[2], &[true, false]).unwrap();
        for t in [floats, ints, bools, tensor0(2.5f64)] {
            let proto = tensor_to_proto("t", &t).unwrap();
            assert_eq!(proto.name, "t");
            assert_eq!(tensor_from_proto(&proto).unwrap(), t);
        }
    }

    #[test]
    fn symbolic_sizes_are_refused() {
        let t = tensor1(&[TDim::Val(3)]);
        let err = tensor_to_proto("shape", &t).unwrap_err().to_string();
        assert!(err.contains("'shape'"), "{err}");
    }
}
