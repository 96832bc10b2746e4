//! Configuration from any text: a config file's TOML and `KEY=value` environment lines read,
//! resolve and display without panicking; a refused secret is never echoed.
//!
//! Input: TOML text, then optionally a NUL byte and environment lines.

#![no_main]

use ccflare_core::account::split_api_keys;
use ccflare_core::config::{Layer, OPTIONS, Settings, Strategy, display_value};
use ccflare_core::error::CoreError;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file_text, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: BTreeMap<&str, &str> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let env = ccflare_config::env_layer_with(|name| env.get(name).map(OsString::from))
        .expect("strings are unicode");
    let file =
        ccflare_config::parse_config_file(Path::new("config.toml"), file_text).unwrap_or_default();
    for value in env.values().chain(file.values()) {
        let _ = value.parse::<Strategy>();
        for spec in OPTIONS {
            let shown = display_value(spec, value);
            if spec.key == "admin_key" {
                assert!(shown.is_empty() || shown == "<set>", "admin key shown");
            } else if spec.secret {
                // A masked key is 12 characters, so no key of 16 or more can be in one.
                for key in split_api_keys(value) {
                    if key.chars().count() >= 16 {
                        assert!(!shown.contains(&key), "{} shows a key", spec.key);
                    }
                }
            }
        }
    }
    let flags = Layer::new();
    match Settings::resolve_with_database(&flags, &env, &file, &file) {
        Ok(settings) => {
            for spec in OPTIONS {
                let _ = display_value(spec, &settings.sources[spec.key].1);
            }
        }
        Err(CoreError::InvalidOption { option, value, .. }) => {
            let spec = OPTIONS
                .iter()
                .find(|spec| spec.env == option)
                .expect("named option");
            assert!(!spec.secret || value == "<hidden>", "{option} echoed");
        }
        Err(CoreError::UnknownOption { .. }) => {}
    }
});
