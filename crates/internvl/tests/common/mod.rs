//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// The f32 tolerance on max|diff| / max|ref| against the official outputs.
pub const F32_TOLERANCE: f32 = 1e-4;

/// `tests/fixtures/NAME` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The golden tensors of a fixture case.
pub fn expected(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(case).join("expected.safetensors"), &Device::Cpu)
        .expect("expected.safetensors of the fixture")
}

/// max|a − b| / max|b|.
pub fn rel_diff(actual: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(actual.dims(), reference.dims(), "shape mismatch");
    let a = actual.to_dtype(DType::F32).unwrap();
    let r = reference.to_dtype(DType::F32).unwrap();
    let diff = (a - &r).unwrap().abs().unwrap().max_all().unwrap();
    let scale = r.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(f32::MIN_POSITIVE)
}

/// Prints and checks `rel_diff(actual, reference) <= tol`.
pub fn assert_close(label: &str, actual: &Tensor, reference: &Tensor, tol: f32) {
    let rel = rel_diff(actual, reference);
    println!("{label:<48} max|diff|/max|ref| = {rel:.3e} (tolerance {tol:.0e})");
    assert!(
        rel <= tol,
        "{label}: relative difference {rel:e} exceeds {tol:e}"
    );
}
