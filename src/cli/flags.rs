//! The setting flags of each subcommand, made from the settings table
//! (`config/keys.rs`): a key with a flag for a subcommand is a flag there,
//! with its environment variable shown in `--help`. Only values typed on
//! the command line are taken here; the environment is its own layer, so
//! that each value's origin is known.

use std::marker::PhantomData;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, FromArgMatches};

use crate::config::{Cmd, KEYS};

/// The subcommand a set of flags belongs to.
pub trait ForCmd {
    const CMD: Cmd;
}

#[derive(Debug, Clone)]
pub struct Global;
#[derive(Debug, Clone)]
pub struct Watch;
#[derive(Debug, Clone)]
pub struct Supervise;
#[derive(Debug, Clone)]
pub struct Node;

impl ForCmd for Global {
    const CMD: Cmd = Cmd::Global;
}
impl ForCmd for Watch {
    const CMD: Cmd = Cmd::Watch;
}
impl ForCmd for Supervise {
    const CMD: Cmd = Cmd::Supervise;
}
impl ForCmd for Node {
    const CMD: Cmd = Cmd::Node;
}

/// The setting flags given on the command line, by key name.
#[derive(Debug, Clone)]
pub struct SettingFlags<C> {
    pub values: Vec<(&'static str, String)>,
    _cmd: PhantomData<C>,
}

impl<C: ForCmd> FromArgMatches for SettingFlags<C> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let values = KEYS
            .iter()
            .filter(|k| k.takes_flag_in(C::CMD))
            .filter(|k| matches.value_source(k.name) == Some(ValueSource::CommandLine))
            .filter_map(|k| Some((k.name, matches.get_one::<String>(k.name)?.clone())))
            .collect();
        Ok(SettingFlags {
            values,
            _cmd: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<C: ForCmd> clap::Args for SettingFlags<C> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        KEYS.iter()
            .filter(|k| k.takes_flag_in(C::CMD))
            .fold(cmd, |cmd, key| {
                let flag = key.flag_name().expect("filtered on flags");
                cmd.arg(
                    Arg::new(key.name)
                        .long(flag.trim_start_matches('-'))
                        .value_name(key.value_name)
                        .help(match key.default {
                            "" => key.meaning.to_string(),
                            d => format!("{} (default: {d})", key.meaning),
                        })
                        .env(key.env)
                        .hide_env_values(true)
                        .allow_hyphen_values(true)
                        .global(C::CMD == Cmd::Global),
                )
            })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
