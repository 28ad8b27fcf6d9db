//! Tensor operations that candle does not provide.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// PyTorch's cubic-convolution constant (`A = -0.75`), used by `F.interpolate(mode="bicubic")`.
/// (PIL's image resampling uses -0.5; see `processing::resize`.)
const TORCH_CUBIC_A: f32 = -0.75;

/// Taps and weights of PyTorch's bicubic kernel along one axis (`align_corners = False`).
struct CubicAxis {
    /// For each output index, the 4 clamped input indices.
    taps: Vec<[usize; 4]>,
    /// For each output index, the 4 weights.
    weights: Vec<[f32; 4]>,
}

impl CubicAxis {
    /// Computes, in f32 as ATen's CPU kernel does, the taps for `input` -> `output` samples.
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f32 / output as f32;
        let last = input as i64 - 1;
        let (taps, weights) = (0..output)
            .map(|o| {
                // No clamping of the source coordinate for cubic (it may be negative).
                let src = scale * (o as f32 + 0.5) - 0.5;
                let index = (src.floor() as i64).min(last);
                let t = (src - index as f32).clamp(0.0, 1.0);
                let taps = std::array::from_fn(|k| (index - 1 + k as i64).clamp(0, last) as usize);
                (taps, cubic_weights(t))
            })
            .unzip();
        Self { taps, weights }
    }
}

fn cubic_weights(t: f32) -> [f32; 4] {
    let a = TORCH_CUBIC_A;
    // |x| <= 1 and 1 < |x| < 2 branches of the Keys kernel.
    let near = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resizes a channels-first f32 grid `[C, H, W]` to `[C, out_h, out_w]` exactly as
/// `torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False)` does on CPU:
/// f32 arithmetic, edge-replicated taps, no antialiasing, rows accumulated in ATen's order.
pub fn bicubic_resize_chw(grid: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (channels, in_h, in_w) = grid.dims3()?;
    if out_h == 0 || out_w == 0 || in_h == 0 || in_w == 0 {
        return Err(Error::InvalidArgument(format!(
            "bicubic resize from {in_h}x{in_w} to {out_h}x{out_w}: sizes must be positive"
        )));
    }
    let data = grid.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let rows = CubicAxis::new(in_h, out_h);
    let cols = CubicAxis::new(in_w, out_w);
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for plane in data.chunks_exact(in_h * in_w) {
        for (row_taps, row_weights) in rows.taps.iter().zip(&rows.weights) {
            for (col_taps, col_weights) in cols.taps.iter().zip(&cols.weights) {
                let horizontal = |r: usize| {
                    let line = &plane[r * in_w..(r + 1) * in_w];
                    let mut acc = line[col_taps[0]] * col_weights[0];
                    for k in 1..4 {
                        acc += line[col_taps[k]] * col_weights[k];
                    }
                    acc
                };
                let mut acc = horizontal(row_taps[0]) * row_weights[0];
                for k in 1..4 {
                    acc += horizontal(row_taps[k]) * row_weights[k];
                }
                out.push(acc);
            }
        }
    }
    Ok(Tensor::from_vec(out, (channels, out_h, out_w), &Device::Cpu)?.to_device(grid.device())?)
}

/// Softmax over the last dimension. f32 tensors on the CPU take a vectorised path (a Cody–Waite
/// + degree-6 polynomial `exp`, ≈1 ulp, rows in parallel); other dtypes and devices use candle's op.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() {
        return candle_nn::ops::softmax(x, candle_core::D::Minus1);
    }
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        x.contiguous()?.apply_op1_no_bwd(&fast::Softmax)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// GELU with the exact erf, `0.5·x·(1 + erf(x/√2))`. f32 tensors on the CPU take a vectorised,
/// parallel path (rational erf approximation, |error| < 1e-7); others use candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() && !x.track_op() {
        x.contiguous()?.apply_op1_no_bwd(&fast::GeluErf)
    } else {
        x.gelu_erf()
    }
}

/// Bidirectional multi-head attention `softmax(scale·Q·Kᵀ)·V` over `[B, N, C]` inputs (heads of
/// width C/H side by side in the last dimension, as the fused qkv projection lays them out),
/// returning `[B, N, C]` with the heads merged back.
///
/// f32 on the CPU runs a fused kernel: per (batch, head, block of query rows) one GEMM for the
/// scores, the row softmax and one GEMM for the output, all in cache and in parallel, reading q, k,
/// v in place (no transposes, no `[B, H, N, N]` tensor). Other dtypes/devices: scores and softmax
/// in f32 with candle's ops.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_heads: usize,
    scale: f64,
) -> candle_core::Result<Tensor> {
    if q.dtype() == DType::F32
        && q.device().is_cpu()
        && k.dtype() == DType::F32
        && v.dtype() == DType::F32
        && !tracked(&[q, k, v])
    {
        return q.apply_op3_no_bwd(
            k,
            v,
            &fast::Attention {
                num_heads,
                scale: scale as f32,
            },
        );
    }
    let (b, n, c) = q.dims3()?;
    let heads = |t: &Tensor| {
        t.reshape((b, n, num_heads, c / num_heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    let dtype = q.dtype();
    let (qh, kh, vh) = (heads(q)?, heads(k)?, heads(v)?);
    let scores = (qh.to_dtype(DType::F32)? * scale)?.matmul(&kh.to_dtype(DType::F32)?.t()?)?;
    let probs = softmax_last_dim(&scores)?.to_dtype(dtype)?;
    probs.matmul(&vh)?.transpose(1, 2)?.reshape((b, n, c))
}

/// Whether any of `tensors` is part of an autograd graph (a training forward). The fused CPU
/// kernels here have no backward pass, so such inputs take candle's differentiable ops.
pub fn tracked(tensors: &[&Tensor]) -> bool {
    tensors.iter().any(|t| t.track_op())
}

/// LayerNorm over the last dimension (`weight`, `bias` broadcast), computed in f32: candle's
/// fused kernel when nothing needs gradients, else the differentiable formula.
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    if !tracked(&[x, weight, bias]) {
        return candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32);
    }
    let mean = x.mean_keepdim(candle_core::D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// RMSNorm `x / √(mean(x²) + eps) · weight` (f32): candle's fused kernel when nothing needs
/// gradients, else the differentiable formula.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if !tracked(&[x, weight]) {
        return candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32);
    }
    let inv_rms = (x.sqr()?.mean_keepdim(candle_core::D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    x.broadcast_mul(&inv_rms)?.broadcast_mul(weight)
}

/// Most rows [`linear_few_rows`] takes; more go to candle's GEMM.
pub const FEW_ROWS: usize = 16;

/// `x · weightᵀ (+ bias)` for `x` `[..., C]` with at most [`FEW_ROWS`] rows in all and `weight`
/// `[K, C]`, as decoding needs it (one row per running sequence).
///
/// f32 on the CPU runs a kernel that reads every weight row once and takes its dot products with
/// all the rows while it is in cache: a decode step is bound by reading the weights, so N rows
/// cost little more than one (a general GEMM packs the weights first, which cost as much as the
/// product at these shapes). Other dtypes / devices / more rows use candle's matmul.
pub fn linear_few_rows(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let width = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / width.max(1);
    let fast_path = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.device().is_cpu()
        && (1..=FEW_ROWS).contains(&rows)
        && !tracked(&[x, weight]);
    let x2 = x.reshape((rows, width))?;
    let out = if fast_path {
        x2.contiguous()?
            .apply_op2_no_bwd(&weight.contiguous()?, &few_rows::FewRowsMatmul)?
    } else if tracked(&[x, weight]) && x.dtype() == DType::F32 && x.device().is_cpu() {
        training_matmul(&x2, weight)?
    } else {
        x2.matmul(&weight.t()?)?
    };
    let out = match bias {
        Some(b) => out.broadcast_add(b)?,
        None => out,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("x has a last dimension") = weight.dim(0)?;
    out.reshape(out_dims)
}

/// A linear kernel's operands as f32 slices, `x [M, C]` and `weight [K, C]`, and `(M, C, K)`.
type LinearOperands<'a> = (&'a [f32], &'a [f32], (usize, usize, usize));

/// The f32 slices and sizes `(M, C, K)` of a linear kernel's operands `x [M, C]` and
/// `weight [K, C]`, or an error naming `kernel` for another dtype, layout or shape.
fn linear_operands<'a>(
    kernel: &str,
    xs: &'a candle_core::CpuStorage,
    xs_layout: &candle_core::Layout,
    w: &'a candle_core::CpuStorage,
    w_layout: &candle_core::Layout,
) -> candle_core::Result<LinearOperands<'a>> {
    use candle_core::CpuStorage;
    let (CpuStorage::F32(xs), CpuStorage::F32(w)) = (xs, w) else {
        candle_core::bail!("{kernel} expects f32");
    };
    let (Some((xa, xb)), Some((wa, wb))) = (
        xs_layout.contiguous_offsets(),
        w_layout.contiguous_offsets(),
    ) else {
        candle_core::bail!("{kernel} expects contiguous inputs");
    };
    let (m, c) = xs_layout.shape().dims2()?;
    let (k, wc) = w_layout.shape().dims2()?;
    if c != wc {
        candle_core::bail!("{kernel}: x is [{m}, {c}], weight is [{k}, {wc}]");
    }
    Ok((&xs[xa..xb], &w[wa..wb], (m, c, k)))
}

/// `x · weightᵀ` in a training forward, differentiated only towards what trains: candle's matmul
/// backward computes both operand gradients, so a frozen weight would cost a weight-sized
/// gradient (memory and a GEMM) per use, and frozen input activations an activation-sized one.
fn training_matmul(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let op = training_matmul::Matmul {
        input_grad: x.track_op(),
        weight_grad: weight.track_op(),
    };
    x.contiguous()?.apply_op2(&weight.contiguous()?, op)
}

/// The op of [`training_matmul`].
mod training_matmul {
    use candle_core::{CpuStorage, Layout, Shape, Tensor};

    pub struct Matmul {
        pub input_grad: bool,
        pub weight_grad: bool,
    }

    impl candle_core::CustomOp2 for Matmul {
        fn name(&self) -> &'static str {
            "training-matmul"
        }

        fn cpu_fwd(
            &self,
            xs: &CpuStorage,
            xs_layout: &Layout,
            w: &CpuStorage,
            w_layout: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let (xs, w, (m, c, k)) =
                super::linear_operands("training matmul", xs, xs_layout, w, w_layout)?;
            let mut out = vec![0f32; m * k];
            // SAFETY: every slice holds exactly the elements the strides below address:
            // out [m, k] row-major, xs [m, c] row-major, w [k, c] row-major read as wᵀ [c, k].
            unsafe {
                gemm::gemm(
                    m,
                    k,
                    c,
                    out.as_mut_ptr(),
                    1,
                    k as isize,
                    false,
                    xs.as_ptr(),
                    1,
                    c as isize,
                    w.as_ptr(),
                    c as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
            Ok((CpuStorage::F32(out), Shape::from_dims(&[m, k])))
        }

        fn bwd(
            &self,
            x: &Tensor,
            w: &Tensor,
            _res: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
            // Detached operands: a gradient must not carry a graph (through a variable operand
            // it would, and an optimiser state built from it would keep every step's graph).
            let grad = grad.detach();
            let x_grad = self
                .input_grad
                .then(|| grad.matmul(&w.detach()))
                .transpose()?;
            let w_grad = self
                .weight_grad
                .then(|| grad.t()?.matmul(&x.detach()))
                .transpose()?;
            Ok((x_grad, w_grad))
        }
    }
}

/// A linear layer (`weight [out, in]`, optional `bias [out]`) applied through
/// [`linear_few_rows`]: the decode fast path when nothing trains, and gradients only towards
/// trainable operands in a training forward.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl candle_core::Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear_few_rows(x, &self.weight, self.bias.as_ref())
    }
}

/// A [`Linear`] with bias loaded from `vb` (`weight`, `bias`).
pub fn linear_layer(
    input: usize,
    output: usize,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<Linear> {
    let weight = vb.get((output, input), "weight")?;
    let bias = vb.get(output, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// A [`Linear`] without bias loaded from `vb` (`weight`).
pub fn linear_layer_no_bias(
    input: usize,
    output: usize,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<Linear> {
    Ok(Linear::new(vb.get((output, input), "weight")?, None))
}

/// The kernel of [`linear_few_rows`].
mod few_rows {
    use candle_core::{CpuStorage, Layout, Shape};
    use rayon::prelude::*;

    /// Weight rows per rayon task.
    const ROWS_PER_TASK: usize = 64;

    pub struct FewRowsMatmul;

    impl candle_core::CustomOp2 for FewRowsMatmul {
        fn name(&self) -> &'static str {
            "few-rows-matmul"
        }

        fn cpu_fwd(
            &self,
            xs: &CpuStorage,
            xs_layout: &Layout,
            w: &CpuStorage,
            w_layout: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let (xs, w, (m, c, k)) =
                super::linear_operands("few-rows matmul", xs, xs_layout, w, w_layout)?;
            // [K, M] first (each task owns whole weight rows), then transposed.
            let mut by_row = vec![0f32; k * m];
            by_row
                .par_chunks_mut(ROWS_PER_TASK * m)
                .zip(w.par_chunks(ROWS_PER_TASK * c))
                .for_each(|(out, w)| {
                    for (out, row) in out.chunks_exact_mut(m).zip(w.chunks_exact(c)) {
                        dots(xs, c, row, out);
                    }
                });
            let mut out = vec![0f32; m * k];
            for (j, dots) in by_row.chunks_exact(m).enumerate() {
                for (i, v) in dots.iter().enumerate() {
                    out[i * k + j] = *v;
                }
            }
            Ok((CpuStorage::F32(out), Shape::from_dims(&[m, k])))
        }
    }

    /// `out[i] = xs[i] · row` for the `out.len()` rows of width `c` in `xs`.
    fn dots(xs: &[f32], c: usize, row: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            for (start, group) in (0..out.len()).step_by(4).zip(out.chunks_mut(4)) {
                let xs = &xs[start * c..(start + group.len()) * c];
                // SAFETY: the features were just detected; slices are in bounds by construction.
                unsafe {
                    match group.len() {
                        4 => dots_avx2::<4>(xs, c, row, group),
                        3 => dots_avx2::<3>(xs, c, row, group),
                        2 => dots_avx2::<2>(xs, c, row, group),
                        _ => dots_avx2::<1>(xs, c, row, group),
                    }
                }
            }
            return;
        }
        for (x, o) in xs.chunks_exact(c).zip(out.iter_mut()) {
            *o = x.iter().zip(row).map(|(a, b)| a * b).sum();
        }
    }

    /// `M` dot products against one weight row: each 8-float piece of the row is loaded once
    /// and multiplied into `M` accumulators.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_avx2<const M: usize>(xs: &[f32], c: usize, row: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        debug_assert!(xs.len() >= M * c && row.len() >= c && out.len() >= M);
        let mut acc = [_mm256_setzero_ps(); M];
        let full = c / 8 * 8;
        let mut j = 0;
        while j < full {
            let w = _mm256_loadu_ps(row.as_ptr().add(j));
            for (i, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(xs.as_ptr().add(i * c + j));
                *a = _mm256_fmadd_ps(x, w, *a);
            }
            j += 8;
        }
        for (i, a) in acc.iter().enumerate() {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
            let mut sum: f32 = lanes.iter().sum();
            for t in full..c {
                sum += xs[i * c + t] * row[t];
            }
            out[i] = sum;
        }
    }
}

/// CPU kernels for [`softmax_last_dim`] and [`gelu_erf`]: candle's versions call scalar libm
/// `exp`/`erf` per element, which made them a large share of the ViT's run time.
mod fast {
    use candle_core::{CpuStorage, Layout, Shape};
    use rayon::prelude::*;

    /// Rows (or chunks) handed to one rayon task.
    const CHUNK: usize = 1 << 14;

    pub struct Softmax;
    pub struct GeluErf;

    fn contiguous_f32<'a>(
        storage: &'a CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<&'a [f32]> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fast kernel expects f32");
        };
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(&data[start..end]),
            None => candle_core::bail!("fast kernel expects a contiguous tensor"),
        }
    }

    impl candle_core::CustomOp1 for Softmax {
        fn name(&self) -> &'static str {
            "fast-softmax-last-dim"
        }

        fn cpu_fwd(
            &self,
            storage: &CpuStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let src = contiguous_f32(storage, layout)?;
            let row = *layout.dims().last().unwrap_or(&1);
            let mut dst = vec![0f32; src.len()];
            if let Some(rows) = CHUNK.checked_div(row) {
                let rows_per_task = rows.max(1) * row;
                dst.par_chunks_mut(rows_per_task)
                    .zip(src.par_chunks(rows_per_task))
                    .for_each(|(d, s)| {
                        for (d, s) in d.chunks_exact_mut(row).zip(s.chunks_exact(row)) {
                            dispatch_softmax_row(s, d);
                        }
                    });
            }
            Ok((CpuStorage::F32(dst), layout.shape().clone()))
        }
    }

    impl candle_core::CustomOp1 for GeluErf {
        fn name(&self) -> &'static str {
            "fast-gelu-erf"
        }

        fn cpu_fwd(
            &self,
            storage: &CpuStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let src = contiguous_f32(storage, layout)?;
            let mut dst = vec![0f32; src.len()];
            dst.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK))
                .for_each(|(d, s)| dispatch_gelu(s, d));
            Ok((CpuStorage::F32(dst), layout.shape().clone()))
        }
    }

    /// See [`super::attention`].
    pub struct Attention {
        pub num_heads: usize,
        pub scale: f32,
    }

    /// Query rows per task: the score block (ROWS × N f32) stays in L2.
    const ROWS: usize = 64;

    /// A `[B, N, C]` f32 view with unit stride in C.
    #[derive(Clone, Copy)]
    struct View {
        ptr: *const f32,
        batch_stride: usize,
        row_stride: usize,
    }

    // SAFETY: views are only read, from buffers that outlive the parallel section.
    unsafe impl Send for View {}
    unsafe impl Sync for View {}

    impl View {
        /// Pointer to element (batch, row, col). A method, so that closures capture the whole view
        /// (which is Sync) rather than its raw-pointer field.
        ///
        /// # Safety
        /// The indices must be inside the viewed tensor.
        unsafe fn at(&self, batch: usize, row: usize, col: usize) -> *const f32 {
            self.ptr
                .add(batch * self.batch_stride + row * self.row_stride + col)
        }
    }

    fn view(storage: &CpuStorage, layout: &Layout, dims: &[usize]) -> candle_core::Result<View> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("attention expects f32");
        };
        if layout.dims() != dims {
            candle_core::bail!(
                "attention: q, k, v shapes differ ({:?} vs {dims:?})",
                layout.dims()
            );
        }
        let stride = layout.stride();
        if stride[2] != 1 {
            candle_core::bail!("attention: the channel dimension must have unit stride");
        }
        let offset = layout.start_offset();
        Ok(View {
            // SAFETY: the layout's offset is within the storage.
            ptr: unsafe { data.as_ptr().add(offset) },
            batch_stride: stride[0],
            row_stride: stride[1],
        })
    }

    /// Output pointer shared by tasks that write disjoint (row block, head) tiles.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint regions.
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}

    impl Out {
        /// # Safety
        /// `offset` must be inside the output buffer.
        unsafe fn at(&self, offset: usize) -> *mut f32 {
            self.0.add(offset)
        }
    }

    impl candle_core::CustomOp3 for Attention {
        fn name(&self) -> &'static str {
            "fast-attention"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let dims = l1.dims().to_vec();
            let &[b, n, c] = dims.as_slice() else {
                candle_core::bail!("attention expects [batch, tokens, channels], got {dims:?}");
            };
            if self.num_heads == 0 || !c.is_multiple_of(self.num_heads) {
                candle_core::bail!(
                    "attention: {c} channels do not split into {} heads",
                    self.num_heads
                );
            }
            let (q, k, v) = (
                view(s1, l1, &dims)?,
                view(s2, l2, &dims)?,
                view(s3, l3, &dims)?,
            );
            let d = c / self.num_heads;
            let mut out = vec![0f32; b * n * c];
            let out_ptr = Out(out.as_mut_ptr());
            let blocks = n.div_ceil(ROWS);
            let tasks = b * self.num_heads * blocks;
            (0..tasks).into_par_iter().for_each_init(
                || vec![0f32; ROWS * n],
                |scores, task| {
                    let (bh, block) = (task / blocks, task % blocks);
                    let (batch, head) = (bh / self.num_heads, bh % self.num_heads);
                    let row0 = block * ROWS;
                    let rows = ROWS.min(n - row0);
                    let col = head * d;
                    // SAFETY: every pointer below stays inside its [B, N, C] buffer: rows < n,
                    // columns < c, and each task writes its own (rows, head) tile of `out`.
                    unsafe {
                        let q0 = q.at(batch, row0, col);
                        let k0 = k.at(batch, 0, col);
                        let v0 = v.at(batch, 0, col);
                        let o0 = out_ptr.at(batch * n * c + row0 * c + col);
                        // scores[rows × n] = scale · Q_blk · Kᵀ
                        gemm::gemm(
                            rows,
                            n,
                            d,
                            scores.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            q0,
                            1,
                            q.row_stride as isize,
                            k0,
                            k.row_stride as isize,
                            1,
                            0.0,
                            self.scale,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                        for row in scores[..rows * n].chunks_exact_mut(n) {
                            dispatch_softmax_in_place(row);
                        }
                        // out[rows × d] = P · V
                        gemm::gemm(
                            rows,
                            d,
                            n,
                            o0,
                            1,
                            c as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            n as isize,
                            v0,
                            1,
                            v.row_stride as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                },
            );
            Ok((CpuStorage::F32(out), Shape::from_dims(&dims)))
        }
    }

    // Runtime dispatch: the crate is compiled for baseline x86-64, so the vector versions are
    // compiled separately with AVX2 + FMA enabled and chosen when the CPU has them.
    fn dispatch_softmax_row(s: &[f32], d: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { softmax_row_avx2(s, d) };
        }
        softmax_row(s, d)
    }

    fn dispatch_softmax_in_place(row: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { softmax_in_place_avx2(row) };
        }
        softmax_in_place(row)
    }

    fn dispatch_gelu(s: &[f32], d: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { gelu_avx2(s, d) };
        }
        gelu(s, d)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_row_avx2(s: &[f32], d: &mut [f32]) {
        softmax_row(s, d)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_in_place_avx2(row: &mut [f32]) {
        softmax_in_place(row)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu_avx2(s: &[f32], d: &mut [f32]) {
        gelu(s, d)
    }

    #[inline(always)]
    fn softmax_row(s: &[f32], d: &mut [f32]) {
        let max = max_of(s);
        if max == f32::NEG_INFINITY {
            // A fully masked row: PyTorch gives NaN; keep it visible rather than inventing values.
            d.fill(f32::NAN);
            return;
        }
        for (d, s) in d.iter_mut().zip(s) {
            *d = exp(*s - max);
        }
        let sum = sum_of(d);
        for d in d.iter_mut() {
            *d /= sum;
        }
    }

    #[inline(always)]
    fn softmax_in_place(row: &mut [f32]) {
        let max = max_of(row);
        if max == f32::NEG_INFINITY {
            row.fill(f32::NAN);
            return;
        }
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let sum = sum_of(row);
        for x in row.iter_mut() {
            *x /= sum;
        }
    }

    #[inline(always)]
    fn gelu(s: &[f32], d: &mut [f32]) {
        for (d, &x) in d.iter_mut().zip(s) {
            *d = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    /// Max with 8 independent lanes so that it vectorises.
    #[inline(always)]
    fn max_of(s: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let chunks = s.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l = l.max(*v);
            }
        }
        tail.iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, v| m.max(*v))
    }

    #[inline(always)]
    fn sum_of(s: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let chunks = s.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
    }

    /// e^x for x ≤ 0 (softmax after the max shift) and moderate positive x; 0 below −87.3.
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // 1.5·2^23: adding it rounds to the nearest integer, kept in the low mantissa bits.
        const ROUND: f32 = 12_582_912.0;
        let underflow = x < -87.3;
        let x = x.clamp(-87.3, 88.3);
        let shifted = x * LOG2E + ROUND;
        let n = shifted - ROUND;
        let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = 1.987_569_1e-4_f32;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 0.5;
        let y = p * r * r + r + 1.0;
        let scale = f32::from_bits(((n_int + 127) << 23) as u32);
        if underflow {
            0.0
        } else {
            y * scale
        }
    }

    /// erf(x) as a rational function of x², |error| < 1e-7 (saturates to ±1 beyond |x| = 4).
    #[inline(always)]
    pub(super) fn erf(x: f32) -> f32 {
        let x = x.clamp(-4.0, 4.0);
        let x2 = x * x;
        let p = -2.726_142_3e-10_f32;
        let p = p * x2 + 2.770_681_4e-8;
        let p = p * x2 - 2.101_024e-6;
        let p = p * x2 - 5.692_506_4e-5;
        let p = p * x2 - 7.349_906_3e-4;
        let p = p * x2 - 2.954_6e-3;
        let p = p * x2 - 1.609_603_3e-2;
        let q = -1.456_607_2e-5_f32;
        let q = q * x2 - 2.133_740_6e-4;
        let q = q * x2 - 1.682_827e-3;
        let q = q * x2 - 7.373_329e-3;
        let q = q * x2 - 1.426_474e-2;
        x * p / q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The training matmul's values and gradients equal candle's matmul, and an operand that
    /// does not train gets no gradient at all (no weight-sized buffer for a frozen weight).
    #[test]
    fn training_linear_differentiates_only_what_trains() {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (3, 40, 24), &dev).unwrap();
        let w0 = Tensor::randn(0f32, 1.0, (17, 24), &dev).unwrap();
        let b0 = Tensor::randn(0f32, 1.0, 17, &dev).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (3, 40, 17), &dev).unwrap();
        for (x_trains, w_trains) in [(true, false), (false, true), (true, true)] {
            let xv = candle_core::Var::from_tensor(&x0).unwrap();
            let wv = candle_core::Var::from_tensor(&w0).unwrap();
            // A tracked input that is not itself a variable: the output of an op on a variable.
            let leaf_x = if x_trains {
                xv.as_tensor().clone()
            } else {
                x0.clone()
            };
            let leaf_w = if w_trains {
                wv.as_tensor().clone()
            } else {
                w0.clone()
            };
            let x = (&leaf_x * 1.0).unwrap();
            let got = linear_few_rows(&x, &leaf_w, Some(&b0)).unwrap();
            let wt = leaf_w.t().unwrap();
            let want = x
                .reshape((120, 24))
                .unwrap()
                .matmul(&wt)
                .unwrap()
                .broadcast_add(&b0)
                .unwrap()
                .reshape((3, 40, 17))
                .unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-4);
            let grads = (&got * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let reference = (&want * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (trains, leaf) in [(x_trains, &leaf_x), (w_trains, &leaf_w)] {
                match (trains, grads.get(leaf)) {
                    (true, Some(g)) => {
                        // A gradient that carried a graph would keep every step's graph alive
                        // in the optimiser state.
                        assert!(!g.track_op(), "the gradient carries a graph");
                        let r = reference.get(leaf).unwrap();
                        assert!(max_abs_diff(g, r) < 1e-3, "gradient differs");
                    }
                    (false, None) => {}
                    (trains, g) => panic!("trains {trains}, gradient present {}", g.is_some()),
                }
            }
            if x_trains && !w_trains {
                // candle's own matmul computes and keeps the frozen weight's gradient.
                assert!(reference.get(&wt).is_some());
            }
        }
    }

    #[test]
    fn few_rows_linear_equals_matmul() {
        let dev = Device::Cpu;
        for (rows, width, outputs) in [(1, 13, 7), (2, 64, 130), (5, 37, 65), (16, 96, 33)] {
            let x = Tensor::randn(0f32, 1.0, (rows, 1, width), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (outputs, width), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, outputs, &dev).unwrap();
            let got = linear_few_rows(&x, &w, Some(&b)).unwrap();
            assert_eq!(got.dims(), &[rows, 1, outputs]);
            let want = x
                .reshape((rows, width))
                .unwrap()
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap()
                .reshape((rows, 1, outputs))
                .unwrap();
            let diff = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{rows}x{width}x{outputs}: {diff}");
        }
        // More rows than the kernel takes: candle's matmul, same answer shape.
        let x = Tensor::randn(0f32, 1.0, (20, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 8), &dev).unwrap();
        assert_eq!(linear_few_rows(&x, &w, None).unwrap().dims(), &[20, 3]);
    }

    #[test]
    fn identity_at_same_size() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu).unwrap();
        let x = x.reshape((2, 3, 4)).unwrap();
        let y = bicubic_resize_chw(&x, 3, 4).unwrap();
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn weights_sum_to_one() {
        for t in [0.0f32, 0.25, 0.5, 0.9] {
            let s: f32 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "t={t} sum={s}");
        }
    }

    #[test]
    fn constant_grid_stays_constant() {
        let x = Tensor::full(3.5f32, (1, 4, 4), &Device::Cpu).unwrap();
        let y = bicubic_resize_chw(&x, 7, 3).unwrap();
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|v| (v - 3.5).abs() < 1e-5));
    }

    #[test]
    fn zero_size_is_an_error() {
        let x = Tensor::zeros((1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let err = bicubic_resize_chw(&x, 0, 3).unwrap_err().to_string();
        assert!(err.contains("sizes must be positive"), "{err}");
    }

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -197_000..=20_000 {
            let x = i as f32 * 4.4e-4;
            let e = fast::exp(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
        }
        for i in -100_000..=100_000 {
            let x = i as f32 * 6e-5;
            let got = fast::erf(x) as f64;
            worst_erf = worst_erf.max((got - erf_reference(x as f64)).abs());
        }
        println!("fast exp max rel error {worst_exp:.2e}, fast erf max abs error {worst_erf:.2e}");
        assert!(worst_exp < 3e-7, "{worst_exp}");
        assert!(worst_erf < 5e-7, "{worst_erf}");
        assert_eq!(fast::exp(-100.0), 0.0);
    }

    /// erf by its Taylor series (|x| < 3) or continued fraction, in f64.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let t = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (t + f);
            }
            let erfc = (-t * t).exp() / std::f64::consts::PI.sqrt() / (t + f);
            (1.0 - erfc) * x.signum()
        }
    }

    #[test]
    fn fused_attention_matches_the_unfused_path() {
        let dev = Device::Cpu;
        let (b, n, c, h) = (2, 70, 48, 3);
        let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * c), &dev).unwrap();
        let q = qkv.narrow(2, 0, c).unwrap();
        let k = qkv.narrow(2, c, c).unwrap();
        let v = qkv.narrow(2, 2 * c, c).unwrap();
        let fused = attention(&q, &k, &v, h, 0.25).unwrap();
        let heads = |t: &Tensor| {
            t.reshape((b, n, h, c / h))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let scores = (heads(&q) * 0.25)
            .unwrap()
            .matmul(&heads(&k).t().unwrap())
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let reference = probs
            .matmul(&heads(&v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, c))
            .unwrap();
        let d = (fused - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        println!("fused attention max|diff| {d}");
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn fast_softmax_and_gelu_match_candle() {
        // Deterministic inputs over [-10, 10) (random ones made the absolute bound flaky).
        let x = (Tensor::arange(0f32, 7.0 * 333.0, &Device::Cpu).unwrap() * (20.0 / (7.0 * 333.0)))
            .unwrap()
            .affine(1.0, -10.0)
            .unwrap()
            .reshape((7, 333))
            .unwrap();
        let relative = |ours: Tensor, theirs: Tensor| {
            let d = (ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            let scale = theirs.abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
        };
        let softmax = relative(
            softmax_last_dim(&x).unwrap(),
            candle_nn::ops::softmax_last_dim(&x).unwrap(),
        );
        let gelu = relative(gelu_erf(&x).unwrap(), x.gelu_erf().unwrap());
        println!("max|diff|/max|ref|: softmax {softmax:.2e}, gelu {gelu:.2e}");
        assert!(softmax < 1e-6, "{softmax}");
        assert!(gelu < 1e-6, "{gelu}");
    }
}
