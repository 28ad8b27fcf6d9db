//! `internvl bench`.

use anyhow::Result;
use internvl::benchmark::{render_table, run_intern_vit_bench};

use super::parse_dtype;

/// Arguments of `internvl bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed runs (the best is reported) after one warm-up.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Runs the benchmark and prints its table.
pub fn run(args: Args) -> Result<()> {
    let dtype = parse_dtype(&args.dtype)?;
    let rows = run_intern_vit_bench(args.iterations, dtype)?;
    println!("{}", render_table(&rows));
    Ok(())
}
