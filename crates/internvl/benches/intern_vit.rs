//! `cargo bench`: InternViT-300M-448px on one 448×448 image, random weights; prints a table.

use candle_core::DType;
use internvl::benchmark::{render_table, run_intern_vit_bench};

fn main() {
    let iterations = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    match run_intern_vit_bench(iterations, DType::F32) {
        Ok(rows) => println!("{}", render_table(&rows)),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
