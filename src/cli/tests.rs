//! Help that teaches (the CLI's own tests: the CLI lives in the binary): every subcommand's help shows examples, every option says what it does,
//! and the aliases users bring from FSL, MRtrix and nipreps parse to the same arguments.

use super::{Cli, Command};
use clap::{CommandFactory, Parser};
use std::path::PathBuf;

#[test]
fn every_subcommand_has_examples_and_every_option_a_description() {
    let cli = Cli::command();
    let mut problems = Vec::new();
    let mut n_sub = 0;
    for sub in cli.get_subcommands() {
        n_sub += 1;
        let name = sub.get_name();
        let after = sub
            .get_after_help()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let examples: Vec<&str> = after
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("nifreeze-rs {name} ")))
            .collect();
        if !after.contains("Examples:") || examples.is_empty() {
            problems.push(format!("{name}: no example in --help"));
        }
        for arg in sub.get_arguments() {
            if arg.is_hide_set() {
                continue;
            }
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|s| s.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                problems.push(format!("{name} --{id}: no description"));
            }
        }
        if sub.get_about().is_none() {
            problems.push(format!("{name}: no one-line description"));
        }
    }
    assert_eq!(n_sub, 6, "the six commands");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn examples_in_help_parse() {
    // Each example line (with its continuation) must be a valid command line for our parser.
    for sub in Cli::command().get_subcommands() {
        let after = sub.get_after_help().unwrap().to_string();
        let text = after.replace("\\\n", " ");
        for line in text.lines() {
            let line = line.trim();
            if !line.starts_with("nifreeze-rs ") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().take_while(|w| *w != ">").collect();
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("example does not parse: {line}\n{e}");
            }
        }
    }
}

#[test]
fn estimate_help_names_every_output_and_the_transform_direction() {
    let cli = Cli::command();
    let est = cli.find_subcommand("estimate").unwrap();
    let after = est.get_after_help().unwrap().to_string();
    for f in [
        "motion.tsv",
        "transforms.tfm",
        "xfm/vol-NNNN.tfm",
        "transforms.x5",
        "dwi_corrected.nii.gz",
        "brainmask.nii.gz",
        "report.svg",
        "summary.json",
        "sub-01_dwi.bval",
        "reference",
    ] {
        assert!(after.contains(f), "estimate --help does not mention {f}");
    }
    let order = est.get_arguments().find(|a| a.get_id() == "order").unwrap();
    assert!(order.is_hide_set(), "--order only changes the log: hidden");
}

/// `nifreeze-rs estimate d.nii.gz --out o` followed by `extra`.
fn estimate_words<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["nifreeze-rs", "estimate", "d.nii.gz", "--out", "o"][..],
        extra,
    ]
    .concat()
}

/// [`estimate_words`] parsed.
fn estimate_args(extra: &[&str]) -> crate::commands::estimate::args::EstimateArgs {
    match Cli::try_parse_from(estimate_words(extra)).unwrap().command {
        Command::Estimate(a) => a,
        _ => unreachable!(),
    }
}

#[test]
fn aliases_from_fsl_mrtrix_and_nipreps() {
    let a = estimate_args(&["--bvals", "x.bval", "--bvecs", "x.bvec", "--nthreads", "3"]);
    assert_eq!(a.gradients.bval, Some(PathBuf::from("x.bval")));
    assert_eq!(a.gradients.bvec, Some(PathBuf::from("x.bvec")));
    assert_eq!(a.threads.n, 3);
    // MRtrix order: -fslgrad bvecs bvals
    let a = estimate_args(&["--fslgrad", "x.bvec", "x.bval"]);
    let (bval, bvec) = a.gradients.fsl_files().unwrap();
    assert_eq!(bval, &PathBuf::from("x.bval"));
    assert_eq!(bvec, &PathBuf::from("x.bvec"));
    // --fslgrad with --bval, or with one file only, is a usage error
    for bad in [
        &estimate_words(&["--fslgrad", "a", "b", "--bval", "c", "--bvec", "d"])[..],
        &estimate_words(&["--fslgrad", "a"])[..],
        &estimate_words(&["--fslgrad", "a", "b", "--grad", "g"])[..],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} must be refused");
    }
    for cmd in ["predict", "register"] {
        let help = Cli::command()
            .find_subcommand(cmd)
            .unwrap()
            .get_arguments()
            .any(|a| {
                a.get_visible_aliases()
                    .is_some_and(|v| v.contains(&"nthreads"))
            });
        assert!(help, "{cmd} accepts --nthreads");
    }
}

#[test]
fn memory_sizes_parse_with_binary_units() {
    assert_eq!(
        crate::commands::estimate::args::parse_memory_size("1.5G"),
        Ok(1_610_612_736)
    );
    assert_eq!(
        crate::commands::estimate::args::parse_memory_size("4096"),
        Ok(4_294_967_296)
    );
    assert_eq!(
        crate::commands::estimate::args::parse_memory_size("512KiB"),
        Ok(524_288)
    );
    assert!(crate::commands::estimate::args::parse_memory_size("-1G").is_err());
}
