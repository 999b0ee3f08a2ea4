//! A real terminal: a tmux server of the test's own (`tmux -L`, so a person's tmux is
//! never touched) with one detached session, typed into and read with `capture-pane`.

use std::process::{Command, Output};

/// One tmux session running one shell command.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (run by sh) in a detached session of `width`×`height`.
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        super::require("tmux");
        let socket = format!("fpm-live-{}-{}", std::process::id(), super::free_port());
        let t = Tmux { socket };
        let (w, h) = (width.to_string(), height.to_string());
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The screen as text, one line per row.
    pub fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types keys (tmux key names, e.g. `q` or `Up`).
    pub fn keys(&self, keys: &str) {
        assert!(self.run(&["send-keys", "-t", "top", keys]).status.success());
    }

    /// Resizes the terminal, as a person dragging the window does.
    pub fn resize(&self, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        let out = self.run(&["resize-window", "-t", "top", "-x", &w, "-y", &h]);
        assert!(
            out.status.success(),
            "resize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`.
    pub fn format(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "top", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
