//! `trainer`: train, compare, evaluate and look inside the episode's CNNs
//! on CIFAR-10. This binary parses the command line, joins an MPI job when
//! started as one of its ranks, runs one command of the `trainer` library
//! and turns its outcome into an exit status.

use anyhow::{bail, Result};
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use trainer::commands;
use trainer::config::flags::{Cli, Command};
use trainer::interrupt;
use trainer::training::team::{self, Team};

fn main() {
    // A closed pipe (`trainer eval ... | head`) ends the program quietly, as
    // for any Unix tool, instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Under `mpirun`, this process is one rank of a job (team.rs).
    let team = Team::join().unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        team::linger_alone();
        std::process::exit(1);
    });
    if let Err(e) = dispatch(cli, &matches, &team) {
        if let Some(stop) = e.downcast_ref::<interrupt::Interrupted>() {
            eprintln!("{stop}");
            // Every rank stops after the same batch: they finish MPI
            // together, rank 0 having written the checkpoint, then exit.
            team.finish();
            std::process::exit(interrupt::exit_code());
        }
        eprintln!("error: {e:#}");
        // Any other error may be this rank's alone, and the others may wait
        // for it in a step: `exit` without finishing MPI, and the launcher
        // ends the job. A rank other than 0 prints nothing, so it waits for
        // rank 0 (whose error names the rank at fault) to end the job first.
        team.linger();
        std::process::exit(1);
    }
    team.finish();
}

fn dispatch(cli: Cli, matches: &ArgMatches, team: &Team) -> Result<()> {
    // GAPNET_ISA / GAPNET_PORTABLE: an unknown or unsupported choice is an
    // error here rather than a panic in the first plan
    graph::Isa::from_env().map_err(anyhow::Error::msg)?;
    let alone = matches!(cli.command, Some(Command::Train(_)) | Some(Command::Compare(_)) | None);
    if team.ranks() > 1 && !alone {
        bail!(
            "{} MPI ranks: only `train` and `compare` run as an MPI job; run `trainer {}` as one process",
            team.ranks(),
            matches.subcommand_name().unwrap_or_default()
        );
    }
    match cli.command {
        Some(Command::Train(args)) => {
            let sub = matches.subcommand_matches("train").expect("the train subcommand was parsed");
            commands::train::run(args, &commands::train::given_flags(sub), team)
        }
        Some(Command::Compare(args)) => commands::compare::run(args, team),
        Some(Command::Eval(args)) => {
            commands::set_threads(args.threads)?;
            commands::eval::run(&args)
        }
        Some(Command::Explain(args)) => {
            commands::set_threads(args.model.threads)?;
            commands::explain::run(&args)
        }
        Some(Command::Prune(args)) => {
            commands::set_threads(args.model.threads)?;
            commands::prune::run(&args)
        }
        Some(Command::Predict(args)) => {
            commands::set_threads(args.threads)?;
            commands::predict::run(&args)
        }
        Some(Command::Export(args)) => commands::export::run(&args),
        Some(Command::Fetch(args)) => commands::fetch::run(args),
        None => commands::compare::run(cli.compare, team),
    }
}
