//! What start-up needs beyond a valid file, checked by `portico -t`: the directories Portico
//! and Pingora write to exist and are writable, `user`/`group` exist, and the pool can have
//! backends at all. Binds nothing and changes nothing (a probe file is created and removed).

use std::path::Path;

use crate::config::Config;

/// The findings of a check: errors make `-t` fail, warnings are printed and do not.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks everything start-up needs from the machine for `config`.
pub fn check(config: &Config) -> Findings {
    let mut found = Findings::default();
    let server = &config.server;
    let state_file = config.state_file.as_ref().map(|p| p.display().to_string());
    let files = [
        ("state_file", state_file.as_deref()),
        ("pid_file", Some(server.pid_file.as_str())),
        ("error_log", server.error_log.as_deref()),
        ("upgrade_sock", Some(server.upgrade_sock.as_str())),
    ];
    for (key, file) in files {
        let Some(file) = file.filter(|f| !f.is_empty()) else {
            continue;
        };
        if let Err(why) = writable_dir_of(Path::new(file)) {
            found.errors.push(format!("{key}: {why}"));
        }
    }
    if let Some(user) = &server.user {
        match nix::unistd::User::from_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => found.errors.push(format!("user: no such user {user:?}")),
            Err(e) => found
                .errors
                .push(format!("user: cannot look up {user:?}: {e}")),
        }
    }
    if let Some(group) = &server.group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(_)) => {}
            Ok(None) => found.errors.push(format!("group: no such group {group:?}")),
            Err(e) => found
                .errors
                .push(format!("group: cannot look up {group:?}: {e}")),
        }
    }
    if config.backends.is_empty() && config.state_file.is_none() {
        found.errors.push(
            "backends: no backends and no store (set `backends`, or `state_file` to manage the \
             pool through the admin API)"
                .to_string(),
        );
    }
    found
}

/// Whether the directory `file` would be created in exists and accepts a new file: tried by
/// creating (and removing) a probe file, which also answers for read-only mounts and ACLs.
fn writable_dir_of(file: &Path) -> Result<(), String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("directory {} does not exist ({e})", dir.display())),
    }
    let probe = dir.join(format!(".portico-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("cannot write in {} ({e})", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_named_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "pid_file: {}/nowhere/p.pid\nupgrade_sock: {}/u.sock\nuser: no-such-user-xyz\n",
            dir.path().display(),
            dir.path().display()
        );
        let config = Config::from_text(&text).expect("valid");
        let found = check(&config);
        assert!(
            found.errors.iter().any(|e| e.starts_with("pid_file:")),
            "{found:?}"
        );
        assert!(!found.errors.iter().any(|e| e.starts_with("upgrade_sock:")));
        assert!(found.errors.iter().any(|e| e.starts_with("user:")));
        assert!(found
            .errors
            .iter()
            .any(|e| e.contains("no backends and no store")));
    }
}
