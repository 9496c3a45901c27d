//! [`CompressSettings`] from the command line: a preset's TOML file first, then only the flags
//! the user gave. The flags are declared once, on the settings' fields; this module adds the two
//! that are no field of their own (`--config`, and `--density`, which sets both `density` and the
//! `[densities]` table) and tells the flags given from clap's defaults.

use super::settings::CompressSettings;
use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use std::path::PathBuf;

/// The settings as `nnzip compress` reads them from its command line; [`SettingsFlags::settings`]
/// lays the flags over the preset.
#[derive(Debug, Clone)]
pub struct SettingsFlags {
    beside: PresetAndDensity,
    /// The command line's matches, cleared of every value clap filled in itself (its defaults):
    /// what is left are the settings the user gave.
    given: ArgMatches,
}

/// The flags beside the settings' own fields.
#[derive(Debug, Clone, Args)]
#[group(skip)]
struct PresetAndDensity {
    /// Settings from a TOML file (see tools/presets/ for examples); unknown keys are errors.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep this fraction of each layer (`0.1`), or of one layer (`fc1.weight=0.08`); repeatable.
    #[arg(long)]
    density: Vec<DensityFlag>,
}

/// One `--density` value.
#[derive(Debug, Clone, PartialEq)]
pub enum DensityFlag {
    /// `0.1`: every prunable tensor without a density of its own (the key `density`).
    Every(f64),
    /// `fc1.weight=0.08`: one tensor (an entry of `[densities]`).
    Tensor(String, f64),
}

impl std::str::FromStr for DensityFlag {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let number = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("'{v}' is not a number"))
        };
        match s.split_once('=') {
            Some((name, v)) => Ok(DensityFlag::Tensor(name.trim().to_string(), number(v)?)),
            None => Ok(DensityFlag::Every(number(s)?)),
        }
    }
}

impl SettingsFlags {
    /// The settings of the run: the defaults, or the preset's file (`--config`); over them each
    /// flag the user gave, `--density` values added to the file's `[densities]`.
    pub fn settings(&self) -> Result<CompressSettings> {
        let mut s = match &self.beside.config {
            Some(p) => CompressSettings::from_file(p)?,
            None => CompressSettings::default(),
        };
        s.update_from_arg_matches(&self.given)
            .context("reading the flags")?;
        for d in &self.beside.density {
            match d {
                DensityFlag::Every(v) => s.density = Some(*v),
                DensityFlag::Tensor(name, v) => {
                    s.densities.insert(name.clone(), *v);
                }
            }
        }
        Ok(s)
    }
}

impl FromArgMatches for SettingsFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let beside = PresetAndDensity::from_arg_matches(matches)?;
        let mut given = matches.clone();
        for id in matches.ids() {
            if matches.value_source(id.as_str()) != Some(ValueSource::CommandLine) {
                given.try_clear_id(id.as_str()).map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::InvalidValue, e.to_string())
                })?;
            }
        }
        // A value of the wrong type is clap's error, now, as for any other flag.
        CompressSettings::default().update_from_arg_matches(&given)?;
        Ok(SettingsFlags { beside, given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SettingsFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        CompressSettings::augment_args(PresetAndDensity::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        CompressSettings::augment_args_for_update(PresetAndDensity::augment_args_for_update(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: SettingsFlags,
    }

    fn settings(args: &[&str]) -> CompressSettings {
        let cli = Cli::try_parse_from(std::iter::once("nnzip").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.settings.settings().unwrap()
    }

    fn preset(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nnzip-settings-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_flag_gives_the_defaults() {
        let s = settings(&[]);
        let d = CompressSettings::default();
        assert_eq!(format!("{s:?}"), format!("{d:?}"));
    }

    #[test]
    fn flags_set_the_fields_of_the_same_name() {
        let s = settings(&[
            "--bits-fc",
            "3",
            "--gap-bits",
            "6",
            "--raw-f16",
            "--keep-batch-norm",
            "--row-scales",
            "false",
            "--grid-steps",
            "0.1,0.2",
            "--schedule",
            "gradual",
            "--density",
            "0.3",
            "--density",
            "fc1.weight=0.08",
        ]);
        assert_eq!(s.bits_fc, 3);
        assert_eq!(s.gap_bits, crate::compress::settings::GapBits::Bits(6));
        assert!(s.raw_f16 && !s.fold_batch_norm && !s.row_scales);
        assert_eq!(s.grid_steps, vec![0.1, 0.2]);
        assert_eq!(s.schedule, crate::compress::retrain::PruneSchedule::Gradual);
        assert_eq!(s.density, Some(0.3));
        assert_eq!(s.densities.get("fc1.weight"), Some(&0.08));
        assert_eq!(s.bits_conv, CompressSettings::default().bits_conv);
    }

    /// The preset's values stay unless a flag was given, including the preset's booleans that a
    /// flag's own default would contradict.
    #[test]
    fn only_the_flags_given_replace_the_presets_values() {
        let file = preset(
            "flags_over.toml",
            "bits-fc = 3\nraw-f16 = true\nfold-batch-norm = false\ngptq = false\nseed = 7\n\
             density = 0.2\n[densities]\n\"fc2.weight\" = 0.5\n",
        );
        let path = file.to_str().unwrap();
        let kept = settings(&["--config", path]);
        assert_eq!((kept.bits_fc, kept.seed), (3, 7));
        assert!(kept.raw_f16 && !kept.fold_batch_norm && !kept.gptq);
        let over = settings(&[
            "--config",
            path,
            "--bits-fc",
            "4",
            "--gptq",
            "true",
            "--density",
            "fc1.weight=0.05",
        ]);
        assert_eq!((over.bits_fc, over.seed), (4, 7));
        assert!(over.raw_f16 && !over.fold_batch_norm && over.gptq);
        assert_eq!(over.density, Some(0.2));
        assert_eq!(over.densities.len(), 2);
        assert_eq!(over.densities["fc1.weight"], 0.05);
    }

    #[test]
    fn malformed_values_are_clap_errors_naming_the_flag() {
        for (args, expect) in [
            (
                &["--density", "fc1.weight=lots"][..],
                "'lots' is not a number",
            ),
            (
                &["--gap-bits", "sometimes"][..],
                "expected a width from 1 to 16",
            ),
            (&["--bits-fc", "four"][..], "--bits-fc"),
        ] {
            let e = Cli::try_parse_from(std::iter::once("nnzip").chain(args.iter().copied()))
                .expect_err("accepted");
            let text = e.to_string();
            assert!(text.contains(expect), "{args:?}: {text}");
        }
    }
}
