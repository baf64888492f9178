//! `trainer fetch`: the first-use download of CIFAR-10, ahead of time.

use anyhow::Result;

use crate::config::flags::FetchArgs;
use crate::data;
use crate::interrupt;

/// `trainer fetch [--to DIR]`: the first-use download, ahead of time.
pub fn run(args: FetchArgs) -> Result<()> {
    let to_given = args.to.is_some();
    let target = match args.to {
        Some(dir) => data::cache::Target { dir, choose: "choose another --to DIR" },
        None => data::cache::Target::cache(data::cache::cache_dir()?),
    };
    let folder = data::download::ensure(&target, &data::download::Source::from_env()?)?;
    println!("CIFAR-10 is in {}", folder.display());
    if !to_given {
        println!("every command finds it there when --data, CIFAR10_DIR and datasets/ hold no data");
    } else {
        println!("use it with --data {}", interrupt::shell_quote(&folder));
    }
    println!("all ten classes: trainer train --classes all (default: airplane,ship)");
    Ok(())
}
