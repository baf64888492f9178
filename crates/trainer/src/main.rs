//! The gapnet program. For now it prints the two models of the episode and
//! their cost; the training loop, data loading and the CLI come with the
//! trainer issue.

use graph::{preset, Plan, Shape};

fn main() {
    for name in ["seed-fc", "seed-gap"] {
        let spec = preset(name).expect("built-in preset");
        match Plan::new(&spec, Shape::new(3, 32, 32), 64) {
            Ok(plan) => println!("{}", plan.summary()),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("Training from the command line is not implemented yet; see README.md.");
}
