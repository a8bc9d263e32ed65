"""Element types: one table mapping xpuc names to ONNX enums and numpy dtypes.

Bytes per element is what a tensor takes packed, as ONNX stores it and cost models count it
(sub-byte types pack two or four to a byte). In memory at run time every type, sub-byte ones
included, takes its numpy itemsize: ml_dtypes keeps int4 / float4 ... one per byte.
"""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np
from onnx import TensorProto


class DType(enum.Enum):
    """An element type. The value is (short name, ONNX enum, numpy dtype, bytes per element)."""

    FLOAT32 = ("f32", TensorProto.FLOAT, np.dtype(np.float32), 4)
    FLOAT16 = ("f16", TensorProto.FLOAT16, np.dtype(np.float16), 2)
    BFLOAT16 = ("bf16", TensorProto.BFLOAT16, np.dtype(ml_dtypes.bfloat16), 2)
    FLOAT64 = ("f64", TensorProto.DOUBLE, np.dtype(np.float64), 8)
    FLOAT8E4M3 = ("f8e4m3", TensorProto.FLOAT8E4M3FN, np.dtype(ml_dtypes.float8_e4m3fn), 1)
    FLOAT8E5M2 = ("f8e5m2", TensorProto.FLOAT8E5M2, np.dtype(ml_dtypes.float8_e5m2), 1)
    FLOAT8E4M3FNUZ = ("f8e4m3fnuz", TensorProto.FLOAT8E4M3FNUZ, np.dtype(ml_dtypes.float8_e4m3fnuz), 1)
    FLOAT8E5M2FNUZ = ("f8e5m2fnuz", TensorProto.FLOAT8E5M2FNUZ, np.dtype(ml_dtypes.float8_e5m2fnuz), 1)
    FLOAT8E8M0 = ("f8e8m0", TensorProto.FLOAT8E8M0, np.dtype(ml_dtypes.float8_e8m0fnu), 1)
    FLOAT4E2M1 = ("f4e2m1", TensorProto.FLOAT4E2M1, np.dtype(ml_dtypes.float4_e2m1fn), 0.5)
    INT2 = ("i2", TensorProto.INT2, np.dtype(ml_dtypes.int2), 0.25)
    INT4 = ("i4", TensorProto.INT4, np.dtype(ml_dtypes.int4), 0.5)
    INT8 = ("i8", TensorProto.INT8, np.dtype(np.int8), 1)
    INT16 = ("i16", TensorProto.INT16, np.dtype(np.int16), 2)
    INT32 = ("i32", TensorProto.INT32, np.dtype(np.int32), 4)
    INT64 = ("i64", TensorProto.INT64, np.dtype(np.int64), 8)
    UINT2 = ("u2", TensorProto.UINT2, np.dtype(ml_dtypes.uint2), 0.25)
    UINT4 = ("u4", TensorProto.UINT4, np.dtype(ml_dtypes.uint4), 0.5)
    UINT8 = ("u8", TensorProto.UINT8, np.dtype(np.uint8), 1)
    UINT16 = ("u16", TensorProto.UINT16, np.dtype(np.uint16), 2)
    UINT32 = ("u32", TensorProto.UINT32, np.dtype(np.uint32), 4)
    UINT64 = ("u64", TensorProto.UINT64, np.dtype(np.uint64), 8)
    BOOL = ("bool", TensorProto.BOOL, np.dtype(np.bool_), 1)
    STRING = ("str", TensorProto.STRING, np.dtype(object), 8)

    @property
    def short(self) -> str:
        return self.value[0]

    @property
    def onnx(self) -> int:
        return self.value[1]

    @property
    def numpy(self) -> np.dtype:
        return self.value[2]

    @property
    def itemsize(self) -> float:
        """Bytes per element packed (fractional for sub-byte types)."""
        return self.value[3]

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    def __repr__(self) -> str:
        return f"DType.{self.name}"

    def __str__(self) -> str:
        return self.short

    @staticmethod
    def from_onnx(code: int) -> "DType":
        try:
            return _BY_ONNX[code]
        except KeyError:
            name = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() else str(code)
            raise ValueError(f"unsupported element type {name}") from None

    @staticmethod
    def from_numpy(dtype) -> "DType":
        try:
            return _BY_NUMPY[np.dtype(dtype)]
        except KeyError:
            raise ValueError(f"unsupported numpy dtype {dtype}") from None

    @staticmethod
    def from_short(name: str) -> "DType":
        try:
            return _BY_SHORT[name]
        except KeyError:
            raise ValueError(f"unknown element type {name!r}; known: {', '.join(_BY_SHORT)}") from None


_FLOATS = {DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64, DType.FLOAT8E4M3, DType.FLOAT8E5M2,
           DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2FNUZ, DType.FLOAT8E8M0, DType.FLOAT4E2M1}
_INTS = {DType.INT2, DType.INT4, DType.INT8, DType.INT16, DType.INT32, DType.INT64,
         DType.UINT2, DType.UINT4, DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64}
_BY_ONNX = {d.onnx: d for d in DType}
_BY_NUMPY = {d.numpy: d for d in DType if d is not DType.STRING}
_BY_SHORT = {d.short: d for d in DType}
