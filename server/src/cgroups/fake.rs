//! A fake cgroup2 tree in a tempdir that behaves like the kernel where cm depends on it: mkdir fills a cgroup
//! with the interface files of the controllers its parent enables, cgroup.subtree_control takes "+x -y" commands
//! for available controllers only, writes never create files, rmdir refuses a cgroup with processes or children,
//! cgroup.kill empties cgroup.procs. Every write is recorded.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Layout;
use super::devices::Insn;
use super::fs::{CgroupFs, controller_set};

pub(crate) struct FakeCgroup2 {
    dir: tempfile::TempDir,
    writes: Mutex<Vec<(PathBuf, String)>>,
    killed: Mutex<Vec<i32>>,
    /// Interface files that this "kernel" does not create (e.g. memory.swap.max without swap accounting).
    absent: Mutex<HashSet<String>>,
    /// Writes to files of this name fail with EINVAL.
    refused: Mutex<Option<String>>,
    /// Whether SIGKILL leaves the process in place.
    unkillable: Mutex<bool>,
    /// A dir whose first mkdir finds its parent removed (by another container's destroy).
    parent_vanishes: Mutex<Option<PathBuf>>,
    /// Device filters attached: (cgroup dir, program).
    filters: Mutex<Vec<(PathBuf, Vec<Insn>)>>,
}

impl FakeCgroup2 {
    /// A root cgroup offering `controllers` (the contents of its cgroup.controllers), none enabled.
    pub fn new(controllers: &str) -> Arc<FakeCgroup2> {
        let dir = tempfile::tempdir().unwrap();
        for (file, content) in
            [("cgroup.controllers", controllers), ("cgroup.subtree_control", ""), ("cgroup.procs", "1\n")]
        {
            fs::write(dir.path().join(file), content).unwrap();
        }
        Arc::new(FakeCgroup2 {
            dir,
            writes: Mutex::default(),
            killed: Mutex::default(),
            absent: Mutex::default(),
            refused: Mutex::default(),
            unkillable: Mutex::default(),
            parent_vanishes: Mutex::default(),
            filters: Mutex::default(),
        })
    }

    pub fn layout(&self) -> Layout {
        Layout::V2 { root: self.dir.path().to_path_buf() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative)).unwrap().trim().to_string()
    }

    /// Sets a file's contents, as the kernel would change them.
    pub fn set(&self, relative: &str, content: &str) {
        fs::write(self.path(relative), content).unwrap();
    }

    pub fn without_file(&self, name: &str) {
        self.absent.lock().unwrap().insert(name.to_string());
    }

    pub fn refuse_writes_to(&self, name: &str) {
        *self.refused.lock().unwrap() = Some(name.to_string());
    }

    /// The first mkdir of `relative` finds its parent removed, as if another container's destroy just ran.
    pub fn parent_vanishes_before(&self, relative: &str) {
        *self.parent_vanishes.lock().unwrap() = Some(self.path(relative));
    }

    pub fn make_unkillable(&self) {
        *self.unkillable.lock().unwrap() = true;
    }

    /// The values written to the file at `relative`, in order.
    pub fn writes_to(&self, relative: &str) -> Vec<String> {
        let path = self.path(relative);
        self.writes.lock().unwrap().iter().filter(|(p, _)| *p == path).map(|(_, v)| v.clone()).collect()
    }

    pub fn all_writes(&self) -> Vec<(PathBuf, String)> {
        self.writes.lock().unwrap().clone()
    }

    /// The device filter programs attached to the cgroup at `relative`.
    pub fn filters_of(&self, relative: &str) -> Vec<Vec<Insn>> {
        let path = self.path(relative);
        self.filters.lock().unwrap().iter().filter(|(p, _)| *p == path).map(|(_, f)| f.clone()).collect()
    }

    pub fn killed(&self) -> Vec<i32> {
        self.killed.lock().unwrap().clone()
    }

    /// Takes `pid` out of whichever cgroup holds it.
    fn remove_pid(&self, pid: i32) -> io::Result<()> {
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let procs = dir.join("cgroup.procs");
            let kept: String = fs::read_to_string(&procs)?
                .lines()
                .filter(|l| l.trim() != pid.to_string())
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(&procs, kept)?;
            dirs.extend(fs::read_dir(&dir)?.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
        Ok(())
    }
}

fn einval(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

impl CgroupFs for FakeCgroup2 {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut vanishes = self.parent_vanishes.lock().unwrap();
        if vanishes.as_deref() == Some(path) {
            *vanishes = None;
            fs::remove_dir_all(path.parent().unwrap())?;
        }
        drop(vanishes);
        fs::create_dir(path)?;
        let enabled = fs::read_to_string(path.parent().unwrap().join("cgroup.subtree_control"))?;
        let enabled = controller_set(&enabled);
        let mut files = vec![
            ("cgroup.controllers", enabled.join(" ")),
            ("cgroup.subtree_control", String::new()),
            ("cgroup.procs", String::new()),
            ("cgroup.events", "populated 0\nfrozen 0\n".to_string()),
            ("cgroup.kill", String::new()),
            ("cgroup.freeze", "0\n".to_string()),
        ];
        if enabled.contains(&"memory") {
            files.push(("memory.max", "max\n".to_string()));
            files.push(("memory.swap.max", "max\n".to_string()));
            files.push(("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n".to_string()));
        }
        if enabled.contains(&"cpu") {
            files.push(("cpu.max", "max 100000\n".to_string()));
        }
        if enabled.contains(&"pids") {
            files.push(("pids.max", "max\n".to_string()));
        }
        if enabled.contains(&"io") {
            files.push(("io.max", String::new()));
        }
        let absent = self.absent.lock().unwrap();
        for (file, content) in files.into_iter().filter(|(f, _)| !absent.contains(*f)) {
            fs::write(path.join(file), content)?;
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        if !path.is_dir() {
            return Err(io::ErrorKind::NotFound.into());
        }
        if fs::read_dir(path)?.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        if !fs::read_to_string(path.join("cgroup.procs"))?.trim().is_empty() {
            return Err(io::ErrorKind::ResourceBusy.into());
        }
        fs::remove_dir_all(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        self.writes.lock().unwrap().push((path.to_path_buf(), value.to_string()));
        if !path.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        if self.refused.lock().unwrap().as_deref() == Some(name) {
            return Err(einval("Invalid argument".to_string()));
        }
        let dir = path.parent().unwrap();
        match name {
            "cgroup.subtree_control" => {
                let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
                let mut enabled: Vec<String> = fs::read_to_string(path)?.split_whitespace().map(String::from).collect();
                for token in value.split_whitespace() {
                    let (op, controller) = token.split_at(1);
                    if !controller_set(&available).contains(&controller) {
                        return Err(io::ErrorKind::NotFound.into());
                    }
                    match op {
                        "+" => enabled.push(controller.to_string()),
                        "-" => enabled.retain(|c| c != controller),
                        _ => return Err(einval(format!("bad token {token:?}"))),
                    }
                }
                enabled.sort();
                enabled.dedup();
                fs::write(path, enabled.join(" "))
            }
            "cgroup.procs" => {
                let pid: i32 = value.trim().parse().map_err(|_| einval(format!("not a pid: {value:?}")))?;
                self.remove_pid(pid)?;
                let mut procs = fs::read_to_string(path)?;
                procs.push_str(&format!("{pid}\n"));
                fs::write(path, procs)
            }
            "cgroup.kill" if value.trim() == "1" => fs::write(dir.join("cgroup.procs"), ""),
            "cgroup.kill" => Err(einval(format!("cgroup.kill takes 1, not {value:?}"))),
            _ => fs::write(path, value),
        }
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        self.killed.lock().unwrap().push(pid);
        if *self.unkillable.lock().unwrap() {
            return Ok(());
        }
        self.remove_pid(pid)
    }

    /// The kernel attaches to a cgroup that exists (the program itself is checked in devices' tests).
    fn attach_device_filter(&self, dir: &Path, program: &[Insn]) -> io::Result<()> {
        if !dir.join("cgroup.procs").exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no cgroup {}", dir.display())));
        }
        self.filters.lock().unwrap().push((dir.to_path_buf(), program.to_vec()));
        Ok(())
    }
}
