//! The two halves of a fuzz run.
//!
//! The parent starts one child process per target (this same binary, told
//! which target by `FUZZ_CHILD`) and reads what it reports. A child runs its
//! target's seeds, then mutations of its corpus, each input under
//! `catch_unwind`, timed and with its allocations counted; it saves each
//! input to `current` before running it. What cannot be caught in-process (a
//! stack overflow, an allocation refused with no way to fail, an input stuck
//! past the hang limit) ends the child: the parent then saves `current` as
//! the failure, says what ended it, and starts the child again for the time
//! left, so one crash does not end the target's run.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alloc;
use crate::input::{self, Input};
use crate::mutate::{self, Rng};
use crate::targets::{self, Target, TARGETS};

/// What a run is told by its environment.
#[derive(Clone)]
pub struct Settings {
    /// Per target; unset, a quick run: the seeds and `runs` mutations.
    pub seconds: Option<f64>,
    pub runs: u64,
    pub seed: u64,
    /// Bytes an input may have live at once.
    pub budget: usize,
    /// An input slower than this is a failure.
    pub slow: Duration,
    /// An input still running after this ends its child (a hang).
    pub hang: Duration,
    /// The stack inputs run on.
    pub stack: usize,
    /// Targets run at once.
    pub jobs: usize,
    /// target/fuzz: `current` and `failures/` per target.
    pub out: PathBuf,
}

fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

impl Settings {
    pub fn from_env() -> Settings {
        let seconds: Option<f64> = var("FUZZ_SECONDS");
        // A quick run replays the same inputs every time (so `cargo test`
        // passes or fails the same); a timed run explores anew.
        let seed = var::<u64>("FUZZ_SEED").unwrap_or_else(|| match seconds {
            None => 1,
            Some(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        });
        Settings {
            seconds,
            runs: var("FUZZ_RUNS").unwrap_or(300),
            seed,
            budget: var::<usize>("FUZZ_MEMORY_MB").unwrap_or(512) << 20,
            slow: Duration::from_millis(var("FUZZ_SLOW_MS").unwrap_or(1000)),
            hang: Duration::from_secs(var("FUZZ_HANG_SECONDS").unwrap_or(10)),
            // The page parses in WebAssembly, on a 1 MiB stack: a parser
            // that fits there fits on any native thread too.
            stack: var::<usize>("FUZZ_STACK_KIB").unwrap_or(1024) << 10,
            jobs: var("FUZZ_JOBS").unwrap_or(1),
            out: Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp").join("fuzz"),
        }
    }
}

/// The lines a child writes to its standard output for the parent.
const LINE: &str = "fuzz-child:";

/// When the input now running started, in milliseconds since the child
/// started, plus one (0: none is running). The watchdog reads it.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// The last panic's message and place, recorded by the quiet hook.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Time the running input spent in [`untimed`], in microseconds.
static UNTIMED: AtomicU64 = AtomicU64::new(0);

/// Runs `f` off the input's clock: for a target's own checks of what the
/// parser gave (loading a converted model again), which are not the
/// parser's time. The hang limit still counts it.
pub fn untimed<T>(f: impl FnOnce() -> T) -> T {
    let clock = Instant::now();
    let result = f();
    UNTIMED.fetch_add(clock.elapsed().as_micros() as u64, Relaxed);
    result
}

fn since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64 + 1
}

/// A child: fuzzes target `name` and reports on its standard output.
pub fn child(name: &str) -> ExitCode {
    let settings = Settings::from_env();
    let target = TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let replay = std::env::var_os("FUZZ_REPLAY");
    let loud = replay.is_some();
    std::panic::set_hook(Box::new(move |info| {
        let place = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let message = match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
            (Some(s), _) => s.to_string(),
            (_, Some(s)) => s.clone(),
            _ => "(not a string)".into(),
        };
        // Replaying one input, say it all as a panic usually does; a panic
        // of the harness itself (outside any input) ends the child: say where.
        if loud || STARTED.load(Relaxed) == 0 {
            eprintln!("panicked at {place}:\n{message}\n{}", std::backtrace::Backtrace::capture());
        }
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{place}\t{message}"));
    }));
    let start = Instant::now();
    let hang = settings.hang;
    let fuzzer = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(settings.stack)
        .spawn(move || {
            let mut fuzzer = Fuzzer::new(target, settings, start);
            match replay {
                Some(paths) => std::env::split_paths(&paths).for_each(|p| fuzzer.replay(&p)),
                None => fuzzer.run(),
            }
        })
        .expect("the fuzz thread starts");
    // The watchdog: an input stuck past the hang limit ends the child (the
    // parent saves it); no thread can be stopped from outside.
    while !fuzzer.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let started = STARTED.load(Relaxed);
        if started != 0 && since(start).saturating_sub(started) > hang.as_millis() as u64 {
            eprintln!("fuzz: hang: an input has run for over {} s", hang.as_secs());
            std::process::abort();
        }
    }
    match fuzzer.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(3),
    }
}

struct Fuzzer {
    target: &'static Target,
    settings: Settings,
    start: Instant,
    rng: Rng,
    dir: PathBuf,
    current: std::fs::File,
    corpus: Vec<Input>,
    /// What inputs came to (normalised): an input that comes to something
    /// new joins the corpus.
    outcomes: HashSet<String>,
    /// Failures seen, by signature: how often, and the smallest input's size.
    failures: HashMap<String, (u64, usize)>,
    runs: u64,
    mutations: u64,
    slowest: Duration,
    peak: usize,
    last_progress: Instant,
}

/// The corpus grows to this, then new inputs take old ones' places.
const MAX_CORPUS: usize = 1000;
/// Failures saved per target (a bug can have many faces).
const MAX_SAVED: usize = 100;

impl Fuzzer {
    fn new(target: &'static Target, settings: Settings, start: Instant) -> Fuzzer {
        let dir = settings.out.join(target.name);
        std::fs::create_dir_all(dir.join("failures")).expect("target/fuzz/<target>/failures");
        let current = std::fs::File::create(dir.join("current")).expect("target/fuzz/<target>/current");
        Fuzzer {
            target,
            rng: Rng::new(settings.seed),
            settings,
            start,
            dir,
            current,
            corpus: Vec::new(),
            outcomes: HashSet::new(),
            failures: HashMap::new(),
            runs: 0,
            mutations: 0,
            slowest: Duration::ZERO,
            peak: 0,
            last_progress: Instant::now(),
        }
    }

    fn report(&self, what: &str) {
        println!(
            "{LINE} {what} runs={} mutations={} slowest_us={} peak={} corpus={}",
            self.runs,
            self.mutations,
            self.slowest.as_micros(),
            self.peak,
            self.corpus.len()
        );
        let _ = std::io::stdout().flush();
    }

    fn run(&mut self) {
        (self.target.setup)();
        let seeds = targets::seeds(self.target);
        assert!(!seeds.is_empty(), "fuzz target {} has no seeds", self.target.name);
        // Started again after a crash, the seeds have run already.
        let resumed = std::env::var_os("FUZZ_RESUME").is_some();
        for seed in &seeds {
            if !resumed {
                self.exec(seed);
            }
            self.corpus.push(seed.clone());
        }
        let seeds = seeds.len();
        let done = |f: &Fuzzer| match f.settings.seconds {
            Some(s) => f.start.elapsed().as_secs_f64() >= s,
            None => f.mutations >= f.settings.runs,
        };
        while !done(self) {
            // A seed a third of the time: a corpus of hundreds of inputs found
            // along the way would otherwise leave each seed rarely mutated.
            let pool = match self.rng.percent(33) {
                true => &self.corpus[..seeds],
                false => &self.corpus[..],
            };
            let mut input = self.rng.pick(pool).clone();
            let (rng, corpus, target) = (&mut self.rng, &self.corpus, self.target);
            let mutated = catch_unwind(AssertUnwindSafe(|| mutate::mutate(rng, &mut input, target.parts, corpus, target.max_len)));
            self.mutations += 1;
            if mutated.is_err() {
                // A bug of the harness, not the target's: said, and the run goes on.
                let recorded = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                let (place, message) = recorded.split_once('\t').unwrap_or(("", &recorded));
                let detail = format!("the mutator (tests/fuzz) panicked at {place}: {message}");
                self.failure("harness", place, &detail, &input::encode(&input));
                continue;
            }
            if let Some(outcome) = self.exec(&input) {
                if self.outcomes.len() < 100_000 && self.outcomes.insert(outcome) {
                    // Past its size, the corpus keeps its seeds and a new input takes another's place.
                    match self.corpus.len() < MAX_CORPUS.max(seeds + 1) {
                        true => self.corpus.push(input),
                        false => {
                            let at = seeds + self.rng.below(self.corpus.len() - seeds);
                            self.corpus[at] = input;
                        }
                    }
                }
            }
            if self.last_progress.elapsed() > Duration::from_millis(250) {
                self.report("progress");
                self.last_progress = Instant::now();
            }
        }
        self.report("done");
    }

    /// Runs one saved input and says what became of it.
    fn replay(&mut self, path: &Path) {
        (self.target.setup)();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let input = input::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(input.len(), self.target.parts.len(), "{}: parts of a {} input", path.display(), self.target.name);
        let outcome = self.exec(&input);
        println!("{LINE} replayed {}: {}", path.display(), outcome.as_deref().unwrap_or("it failed"));
        self.report("done");
    }

    /// Runs one input; returns what it came to (normalised), or None when it failed.
    fn exec(&mut self, input: &Input) -> Option<String> {
        let encoded = input::encode(input);
        // Saved first: if the input ends the process, the parent reads it here.
        let saved = self.current.set_len(0).and_then(|()| self.current.rewind()).and_then(|()| self.current.write_all(&encoded));
        saved.expect("target/fuzz/<target>/current is written");
        PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();

        alloc::start_input(self.settings.budget);
        STARTED.store(since(self.start), Relaxed);
        UNTIMED.store(0, Relaxed);
        let clock = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| (self.target.run)(input)));
        let took = clock.elapsed().saturating_sub(Duration::from_micros(UNTIMED.load(Relaxed)));
        STARTED.store(0, Relaxed);
        let (peak, refused) = alloc::end_input();

        self.runs += 1;
        self.slowest = self.slowest.max(took);
        self.peak = self.peak.max(peak);
        let outcome = match &result {
            Ok(Ok(outcome)) => normalise(outcome),
            Ok(Err(_)) => "check".into(),
            Err(_) => "panic".into(),
        };
        // Kind, signature (what makes two failures one) and reason.
        let mut failures: Vec<(&str, String, String)> = Vec::new();
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(broken)) => failures.push(("check", normalise(&broken), broken)),
            Err(_) => {
                let recorded = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                let (place, message) = recorded.split_once('\t').unwrap_or(("", &recorded));
                failures.push(("panic", place.to_string(), format!("panicked at {place}: {message}")));
            }
        }
        let (budget, slow) = (self.settings.budget, self.settings.slow);
        if refused > 0 {
            let detail = format!(
                "asked for {refused} more bytes with {peak} live: past the {} MB budget (the request was refused, and the code went on); it came to: {outcome}",
                budget >> 20
            );
            failures.push(("memory", outcome.clone(), detail));
        }
        if took > slow {
            let detail = format!("took {} ms (the limit is {} ms); it came to: {outcome}", took.as_millis(), slow.as_millis());
            failures.push(("slow", outcome.clone(), detail));
        }
        for (kind, signature, detail) in &failures {
            self.failure(kind, signature, detail, &encoded);
        }
        failures.is_empty().then_some(outcome)
    }

    /// Records a failure; the first of each signature is saved with its reason.
    fn failure(&mut self, kind: &str, signature: &str, detail: &str, encoded: &[u8]) {
        // A reason may quote the input; the input itself is saved.
        let detail = match detail.char_indices().nth(1000) {
            Some((end, _)) => format!("{}…", &detail[..end]),
            None => detail.to_string(),
        };
        let detail = detail.as_str();
        let key = format!("{kind}\t{signature}");
        let (count, size) = self.failures.entry(key.clone()).or_insert((0, usize::MAX));
        *count += 1;
        let first = *count == 1;
        if first || encoded.len() < *size {
            // The smallest input of each failure is kept: the easiest to read.
            *size = encoded.len();
            if self.failures.len() <= MAX_SAVED {
                save_failure(&self.dir, self.target.name, kind, &key, detail, encoded);
            }
        }
        if !first || self.failures.len() > MAX_SAVED {
            println!("{LINE} again {kind}");
            return;
        }
        let path = self.dir.join("failures").join(failure_name(kind, &key));
        println!("{LINE} failure {kind}\t{}\t{}", path.display(), detail.replace(['\n', '\t'], " "));
        let _ = std::io::stdout().flush();
    }
}

/// Saves a failing input as failures/<kind>-<hash>.input with its reason
/// beside it (.txt); returns the input's path.
fn save_failure(dir: &Path, target: &str, kind: &str, key: &str, detail: &str, encoded: &[u8]) -> PathBuf {
    let path = dir.join("failures").join(failure_name(kind, key));
    std::fs::write(&path, encoded).expect("a failure is saved");
    let replay = format!("FUZZ_REPLAY={} cargo test --test fuzz", path.display());
    std::fs::write(path.with_extension("txt"), format!("target: {target}\nfailure: {kind}\n{detail}\n\nreplay: {replay}\n")).expect("a failure's reason is saved");
    path
}

/// A failure's file name: its kind and a hash of its signature.
fn failure_name(kind: &str, key: &str) -> String {
    format!("{kind}-{:016x}.input", input::hash(key.as_bytes()))
}

/// An outcome or error without what varies from input to input (numbers,
/// names in quotes), so that "tensor `a` is missing" and "tensor `b` is
/// missing" count as one.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => {}
            None if matches!(c, '`' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            None if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            None => out.push(c),
        }
        if out.len() > 160 {
            break;
        }
    }
    out
}

/// What the parent learns of one target.
#[derive(Default)]
struct Report {
    runs: u64,
    mutations: u64,
    seconds: f64,
    slowest_us: u64,
    peak: usize,
    /// Failing inputs, the repeats of one failure included.
    failing: u64,
    /// The distinct failures: kind, saved input, reason.
    failures: Vec<(String, PathBuf, String)>,
    crashes: u64,
}

/// The parent: runs each target in children and says how it went.
pub fn parent(filters: &[String]) -> ExitCode {
    let settings = Settings::from_env();
    let chosen: Option<Vec<String>> = std::env::var("FUZZ_TARGETS").ok().filter(|s| !s.trim().is_empty()).map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    if let Some(names) = &chosen {
        for name in names {
            if !TARGETS.iter().any(|t| t.name == name) {
                eprintln!("fuzz: no target {name:?}; the targets: {}", TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "));
                return ExitCode::FAILURE;
            }
        }
    }
    let targets: Vec<&'static Target> = TARGETS
        .iter()
        .filter(|t| chosen.as_ref().is_none_or(|names| names.iter().any(|n| n == t.name)))
        .filter(|t| filters.is_empty() || filters.iter().any(|f| format!("fuzz::{}", t.name).contains(f.as_str())))
        .collect();
    if let Some(paths) = std::env::var_os("FUZZ_REPLAY") {
        return replay(&settings, &targets, &paths);
    }
    if targets.is_empty() {
        return ExitCode::SUCCESS;
    }
    let how = match settings.seconds {
        Some(s) => format!("{s} s each"),
        None => format!("the seeds and {} mutations each", settings.runs),
    };
    println!(
        "fuzz: {} targets, {how}, {} at once; seed {} (FUZZ_SEED={} repeats it); failures: more than {} MB live, over {} ms, a panic, a crash",
        targets.len(),
        settings.jobs,
        settings.seed,
        settings.seed,
        settings.budget >> 20,
        settings.slow.as_millis()
    );
    let queue = Mutex::new(targets.clone().into_iter());
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..settings.jobs.max(1) {
            scope.spawn(|| loop {
                let Some(target) = queue.lock().unwrap().next() else { break };
                let report = run_target(&settings, target);
                print_report(target.name, &report);
                reports.lock().unwrap().push((target.name, report));
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|(name, _)| TARGETS.iter().position(|t| t.name == *name));
    println!("\nfuzz: {:<13} {:>9} {:>8} {:>9} {:>10} {:>10}", "target", "inputs", "exec/s", "failures", "slowest", "peak");
    for (name, r) in &reports {
        println!(
            "fuzz: {:<13} {:>9} {:>8.0} {:>9} {:>7.1} ms {:>7.1} MB",
            name,
            r.runs,
            r.runs as f64 / r.seconds.max(1e-9),
            r.failures.len(),
            r.slowest_us as f64 / 1000.0,
            r.peak as f64 / (1 << 20) as f64
        );
    }
    let failed: Vec<&str> = reports.iter().filter(|(_, r)| !r.failures.is_empty()).map(|(n, _)| *n).collect();
    if failed.is_empty() {
        println!("fuzz: no failures");
        return ExitCode::SUCCESS;
    }
    println!(
        "fuzz: failures in {}; each input is saved under {} with its reason beside it; FUZZ_REPLAY=<input> cargo test --test fuzz runs one again",
        failed.join(", "),
        settings.out.display()
    );
    ExitCode::FAILURE
}

fn print_report(name: &str, r: &Report) {
    let mut out = format!(
        "fuzz {name}: {} inputs ({} mutated) in {:.1} s, {:.0}/s; slowest {:.1} ms; peak {:.1} MB; {} failing inputs, {} distinct, {} crashes\n",
        r.runs,
        r.mutations,
        r.seconds,
        r.runs as f64 / r.seconds.max(1e-9),
        r.slowest_us as f64 / 1000.0,
        r.peak as f64 / (1 << 20) as f64,
        r.failing,
        r.failures.len(),
        r.crashes
    );
    for (kind, path, reason) in &r.failures {
        out += &format!("  {kind}: {}\n    {}\n", reason.chars().take(300).collect::<String>(), path.display());
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// How a child ended.
struct Ended {
    success: bool,
    status: String,
    stderr: String,
    /// The last counts it reported.
    runs: u64,
    mutations: u64,
    slowest_us: u64,
    peak: usize,
}

/// Runs `target`'s child, again after each crash, for the time or runs given.
fn run_target(settings: &Settings, target: &Target) -> Report {
    let dir = settings.out.join(target.name);
    // failures/ holds the last run's.
    let _ = std::fs::remove_dir_all(dir.join("failures"));
    std::fs::create_dir_all(dir.join("failures")).expect("target/fuzz/<target>/failures");
    let start = Instant::now();
    let mut report = Report::default();
    let mut crash_sizes: HashMap<String, usize> = HashMap::new();
    let mut last_heartbeat = Instant::now();
    for restart in 0u64.. {
        let left_seconds = settings.seconds.map(|s| s - start.elapsed().as_secs_f64());
        let left_runs = settings.runs.saturating_sub(report.mutations);
        if restart > 0 && (left_seconds.is_some_and(|s| s <= 0.0) || (left_seconds.is_none() && left_runs == 0) || restart > 1000) {
            break;
        }
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .env("FUZZ_CHILD", target.name)
            .env("FUZZ_SEED", settings.seed.wrapping_add(input::hash(target.name.as_bytes())).wrapping_add(restart).to_string())
            .env_remove("FUZZ_REPLAY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match left_seconds {
            Some(s) => command.env("FUZZ_SECONDS", format!("{:.3}", s.max(0.0))),
            None => command.env("FUZZ_RUNS", left_runs.to_string()),
        };
        if restart > 0 {
            command.env("FUZZ_RESUME", "1");
        }
        let limit = Duration::from_secs_f64(left_seconds.unwrap_or(600.0).max(0.0) + 60.0) + settings.hang * 2;
        let mut on_line = |line: &str| {
            if let Some(rest) = line.strip_prefix("failure ") {
                let mut fields = rest.splitn(3, '\t');
                let (kind, path, reason) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                // A child started again after a crash finds the failures its
                // predecessor found (saved under the same name).
                if !report.failures.iter().any(|(_, p, _)| p == Path::new(path)) {
                    report.failures.push((kind.to_string(), PathBuf::from(path), reason.to_string()));
                }
                report.failing += 1;
            } else if line.starts_with("again ") {
                report.failing += 1;
            }
            if let Some(s) = settings.seconds.filter(|&s| s >= 120.0 && last_heartbeat.elapsed() > Duration::from_secs(60)) {
                last_heartbeat = Instant::now();
                println!("fuzz {}: {:.0} of {s:.0} s, {} failing inputs so far", target.name, start.elapsed().as_secs_f64(), report.failing);
            }
        };
        let ended = spawn_child(command, limit, &mut on_line);
        report.runs += ended.runs;
        report.mutations += ended.mutations;
        report.slowest_us = report.slowest_us.max(ended.slowest_us);
        report.peak = report.peak.max(ended.peak);
        if ended.success {
            break;
        }
        // It crashed on the input it last saved.
        report.crashes += 1;
        report.failing += 1;
        report.runs += 1;
        let (kind, reason) = crash_reason(&ended, settings);
        let current = std::fs::read(dir.join("current")).unwrap_or_default();
        // One input per kind of crash (no backtrace tells two stack
        // overflows apart): the smallest, the easiest to read.
        match crash_sizes.get(&kind) {
            None if report.failures.len() < MAX_SAVED => {
                let path = save_failure(&dir, target.name, &kind, &kind, &reason, &current);
                crash_sizes.insert(kind.clone(), current.len());
                report.failures.push((kind, path, reason));
            }
            Some(&size) if current.len() < size => {
                save_failure(&dir, target.name, &kind, &kind, &reason, &current);
                crash_sizes.insert(kind, current.len());
            }
            _ => {}
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report
}

/// What ended a child that did not finish: its kind (the failure's name)
/// and a reason for people.
fn crash_reason(ended: &Ended, settings: &Settings) -> (String, String) {
    let err = &ended.stderr;
    let line_with = |needle: &str| err.lines().find(|l| l.contains(needle)).unwrap_or(needle).trim().to_string();
    if err.contains("has overflowed its stack") {
        let stack = settings.stack >> 10;
        return ("crash-stack".into(), format!("{} (the stack is {stack} KiB; FUZZ_STACK_KIB sets it)", line_with("has overflowed its stack")));
    }
    if err.contains("memory allocation of") {
        return (
            "crash-memory".into(),
            format!("{}: the request would pass the {} MB budget, so it was refused and the process aborted", line_with("memory allocation of"), settings.budget >> 20),
        );
    }
    if err.contains("fuzz: hang") {
        return ("crash-hang".into(), line_with("fuzz: hang"));
    }
    // The fuzz thread's panic (outside any input) is the child's exit code 3.
    if err.contains("panicked at") && ended.status.contains("exit status: 3") {
        return ("crash-harness".into(), format!("the harness itself panicked (a bug of tests/fuzz, not of the target): {}", err.trim().lines().take(3).collect::<Vec<_>>().join(" ")));
    }
    let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
    ("crash".into(), format!("the process ended ({}): {tail}", ended.status))
}

/// Runs a child, handing each report line (without its prefix) to
/// `on_line`, and kills it if it outlives `limit`.
fn spawn_child(mut command: Command, limit: Duration, on_line: &mut dyn FnMut(&str)) -> Ended {
    let mut child = command.spawn().expect("a fuzz child starts");
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let child = Arc::new(Mutex::new(child));
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (child, finished) = (child.clone(), finished.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !finished.load(Relaxed) {
                if start.elapsed() > limit {
                    let _ = child.lock().unwrap().kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        // Its end is what says why it ended.
        String::from_utf8_lossy(&text[text.len().saturating_sub(64 << 10)..]).into_owned()
    });
    let (mut runs, mut mutations, mut slowest_us, mut peak) = (0, 0, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Some(rest) = line.strip_prefix(LINE).map(str::trim_start) else {
            println!("{line}");
            continue;
        };
        if rest.starts_with("progress ") || rest.starts_with("done ") {
            let field = |name: &str| rest.split(' ').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap_or(0);
            (runs, mutations, slowest_us, peak) = (field("runs"), field("mutations"), field("slowest_us"), field("peak") as usize);
        }
        on_line(rest);
    }
    let status = loop {
        if let Some(status) = child.lock().unwrap().try_wait().expect("the child's status") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    finished.store(true, Relaxed);
    let _ = killer.join();
    let stderr = errors.join().unwrap_or_default();
    Ended { success: status.success(), status: status.to_string(), stderr, runs, mutations, slowest_us, peak }
}

/// Runs saved inputs again, one child each, and says what became of them.
fn replay(settings: &Settings, targets: &[&'static Target], paths: &std::ffi::OsStr) -> ExitCode {
    let mut failed = false;
    for path in std::env::split_paths(paths) {
        // The target is in the path (target/fuzz/<target>/…, corpus/<target>/…) or named.
        let from_path = path.ancestors().filter_map(|p| p.file_name()?.to_str()).find_map(|n| TARGETS.iter().find(|t| t.name == n));
        let target = match (from_path, targets) {
            (Some(t), _) => t,
            (None, [t]) => t,
            _ => {
                eprintln!("fuzz: which target is {} for? Name it: FUZZ_TARGETS=<target>", path.display());
                return ExitCode::FAILURE;
            }
        };
        println!("fuzz: replaying {} on {}", path.display(), target.name);
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.env("FUZZ_CHILD", target.name).env("FUZZ_REPLAY", &path).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut found = false;
        let ended = spawn_child(command, settings.hang * 3, &mut |line| {
            if let Some(rest) = line.strip_prefix("failure ") {
                let mut fields = rest.splitn(3, '\t');
                let (kind, _, reason) = (fields.next().unwrap_or(""), fields.next(), fields.next().unwrap_or(""));
                println!("fuzz: failure ({kind}): {reason}");
                found = true;
            } else if line.starts_with("replayed ") {
                println!("fuzz: {line}");
            }
        });
        // What it printed (a panic's message and backtrace) and why it ended.
        eprint!("{}", ended.stderr);
        if !ended.success {
            println!("fuzz: it crashed: {}", crash_reason(&ended, settings).1);
        }
        failed |= !ended.success || found;
    }
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}
