//! Unit tests of the batch scripts: the Slurm script as before, golden files for every system, a parser of each directive line as its system documents it, and the errors.

use super::*;

fn spec() -> JobSpec {
    JobSpec {
        command: vec![
            "./target/release/examples/pi".into(),
            "--sizes-gb".into(),
            "1".into(),
        ],
        ..JobSpec::default()
    }
}

#[test]
fn a_default_script_runs_the_program_with_srun() {
    let script = spec().render().unwrap();
    assert!(script.starts_with("#!/bin/bash\n"));
    for line in [
        "#SBATCH --job-name=pi\n",
        "#SBATCH --nodes=1\n",
        "#SBATCH --ntasks-per-node=4\n",
        "#SBATCH --cpus-per-task=1\n",
        "#SBATCH --output=pi-%j.out\n",
        "#SBATCH --signal=B:USR1@60\n",
        "export MPIDASK_NTHREADS=${SLURM_CPUS_PER_TASK:-1}\n",
        "srun --mpi=pmix ./target/release/examples/pi --sizes-gb 1 &\n",
        "exit $status\n",
    ] {
        assert!(script.contains(line), "{line:?} missing from\n{script}");
    }
}

#[test]
fn every_option_reaches_the_script() {
    let job = JobSpec {
        job_name: Some("big pi".into()),
        partition: Some("gpu".into()),
        account: Some("proj42".into()),
        nodes: 2,
        ntasks_per_node: 8,
        cpus_per_task: 4,
        memory: Some(Memory::PerCpu("2G".into())),
        walltime: Some("1-02:00:00".into()),
        gpus_per_node: Some(4),
        gres: None,
        resources: Some("gpu=1".into()),
        output: Some("logs/%x-%j.log".into()),
        directives: vec!["--constraint=a100".into()],
        prologue: vec!["module load openmpi".into()],
        launcher: Launcher::Mpirun,
        signal_lead_seconds: 120,
        ..spec()
    };
    let script = job.render().unwrap();
    for line in [
        "#SBATCH --job-name='big pi'\n",
        "#SBATCH --partition=gpu\n",
        "#SBATCH --account=proj42\n",
        "#SBATCH --nodes=2\n",
        "#SBATCH --ntasks-per-node=8\n",
        "#SBATCH --cpus-per-task=4\n",
        "#SBATCH --mem-per-cpu=2G\n",
        "#SBATCH --time=1-02:00:00\n",
        "#SBATCH --gpus-per-node=4\n",
        "#SBATCH --output=logs/%x-%j.log\n",
        "#SBATCH --signal=B:USR1@120\n",
        "#SBATCH --constraint=a100\n",
        "module load openmpi\n",
        "export MPIDASK_RESOURCES=gpu=1\n",
        "mpirun ./target/release/examples/pi --sizes-gb 1 &\n",
    ] {
        assert!(script.contains(line), "{line:?} missing from\n{script}");
    }
}

#[test]
fn bad_descriptions_are_named() {
    let cases: Vec<(JobSpec, &str)> = vec![
        (
            JobSpec {
                command: vec![],
                ..spec()
            },
            "no program given",
        ),
        (
            JobSpec {
                ntasks_per_node: 2,
                ..spec()
            },
            "gives 2 rank(s)",
        ),
        (
            JobSpec {
                memory: Some(Memory::PerNode("8GB".into())),
                ..spec()
            },
            "--mem \"8GB\" is not a size",
        ),
        (
            JobSpec {
                memory: Some(Memory::PerGpu("lots".into())),
                ..spec()
            },
            "--mem-per-gpu \"lots\"",
        ),
        (
            JobSpec {
                walltime: Some("90:00".into()),
                ..spec()
            },
            "--walltime \"90:00\"",
        ),
        (
            JobSpec {
                walltime: Some("01:75:00".into()),
                ..spec()
            },
            "is not a walltime",
        ),
        (
            JobSpec {
                walltime: Some("1-30:00:00".into()),
                ..spec()
            },
            "is not a walltime",
        ),
        (
            JobSpec {
                resources: Some("gpu".into()),
                ..spec()
            },
            "--resources \"gpu\"",
        ),
        (
            JobSpec {
                prologue: vec!["a\nb".into()],
                ..spec()
            },
            "--prologue \"a\\nb\" contains a newline",
        ),
    ];
    for (job, expected) in cases {
        let error = job.render().unwrap_err().to_string();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

#[test]
fn sizes_and_walltimes_slurm_accepts() {
    for size in ["100", "8G", "512M", "1T", "64k"] {
        validate_size("mem", size).unwrap();
    }
    for walltime in ["00:10:00", "1:00:00", "2-00:00:00", "10-23:59:59"] {
        validate_walltime(walltime).unwrap();
    }
}

// ----- every system ------------------------------------------------------------------------

/// The program every test job runs.
fn pi() -> Vec<String> {
    vec![
        "./target/release/examples/pi".into(),
        "--sizes-gb".into(),
        "1".into(),
    ]
}

/// The smallest job for `system`: its defaults and a program.
fn minimal(system: BatchSystem) -> JobSpec {
    JobSpec {
        command: pi(),
        ..JobSpec::for_system(system)
    }
}

/// One job using every option `system` can express (Grid Engine has no GPU request,
/// HTCondor no queues; Slurm's output uses its `%` patterns).
fn rich(system: BatchSystem) -> JobSpec {
    let directive = match system {
        BatchSystem::Slurm => "--constraint=a100",
        BatchSystem::Pbs => "-m abe",
        BatchSystem::Lsf => "-x",
        BatchSystem::Sge => "-V",
        BatchSystem::Htcondor => "requirements = (OpSys == \"LINUX\")",
    };
    JobSpec {
        job_name: Some("bigpi".into()),
        partition: (system != BatchSystem::Htcondor).then(|| "gpu".into()),
        account: Some("proj42".into()),
        nodes: 2,
        ntasks_per_node: 8,
        cpus_per_task: 4,
        memory: Some(Memory::PerCpu("2G".into())),
        walltime: Some("1-02:00:00".into()),
        gpus_per_node: (system != BatchSystem::Sge).then_some(4),
        resources: Some("gpu=1".into()),
        output: Some(match system {
            BatchSystem::Slurm => "logs/%x-%j.log".into(),
            _ => "logs/bigpi.log".into(),
        }),
        directives: vec![directive.into()],
        prologue: vec!["module load openmpi".into()],
        signal_lead_seconds: 120,
        ..minimal(system)
    }
}

fn system_name(system: BatchSystem) -> &'static str {
    match system {
        BatchSystem::Slurm => "slurm",
        BatchSystem::Pbs => "pbs",
        BatchSystem::Lsf => "lsf",
        BatchSystem::Sge => "sge",
        BatchSystem::Htcondor => "htcondor",
    }
}

/// Every file a job writes, by golden file name: the script (`<system>-<kind>.txt`), the
/// HTCondor wrapper (`htcondor-<kind>.wrapper.txt`), and PBS in Torque's flavour.
fn rendered() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for system in BatchSystem::ALL {
        for (kind, job) in [("minimal", minimal(system)), ("rich", rich(system))] {
            let name = format!("{}-{kind}", system_name(system));
            files.push((format!("{name}.txt"), job.render().unwrap()));
            if let Some(wrapper) = job.wrapper().unwrap() {
                files.push((format!("{name}.wrapper.txt"), wrapper));
            }
        }
    }
    for (kind, job) in [
        ("minimal", minimal(BatchSystem::Pbs)),
        ("rich", rich(BatchSystem::Pbs)),
    ] {
        let torque = JobSpec {
            pbs_flavour: PbsFlavour::Torque,
            ..job
        };
        files.push((format!("torque-{kind}.txt"), torque.render().unwrap()));
    }
    files
}

/// The scripts are the golden files in `tests/golden/jobscript/` (`MPIDASK_BLESS=1`
/// rewrites them after a deliberate change).
#[test]
fn every_system_renders_its_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/jobscript");
    let bless = std::env::var_os("MPIDASK_BLESS").is_some();
    let files = rendered();
    assert_eq!(files.len(), 14, "2 per system, 2 wrappers, 2 for Torque");
    for (file, text) in files {
        let path = dir.join(&file);
        if bless {
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (MPIDASK_BLESS=1 writes it)", path.display()));
        assert_eq!(text, golden, "{file} differs from what renders");
    }
}

/// The Slurm golden files are what the Slurm-only version printed: the same bytes.
#[test]
fn the_slurm_script_did_not_change() {
    let minimal = minimal(BatchSystem::Slurm).render().unwrap();
    assert!(minimal.starts_with(
        "#!/bin/bash\n# Generated by `mpidask jobscript`. Rank 0 schedules, rank 1 runs the program,\n"
    ));
    assert!(minimal.contains(
        "#SBATCH --output=pi-%j.out\n#SBATCH --signal=B:USR1@60\n\nexport MPIDASK_NTHREADS=${SLURM_CPUS_PER_TASK:-1}\n"
    ));
    assert!(minimal.ends_with(
        "srun --mpi=pmix ./target/release/examples/pi --sizes-gb 1 &\n\
         launched=$!\n\
         trap 'kill -USR1 $launched' USR1\n\
         trap 'kill -TERM $launched' TERM\n\
         wait $launched\n\
         status=$?\n\
         # A trapped signal ends the first wait early: wait for the launcher to finish.\n\
         while kill -0 $launched 2>/dev/null; do wait $launched; status=$?; done\n\
         exit $status\n"
    ));
}

/// The shell scripts are valid bash (`bash -n`), and each keeps the trap-and-wait logic.
#[test]
fn every_shell_script_parses_and_forwards_the_stop_signal() {
    for (file, text) in rendered() {
        if file.starts_with("htcondor-") && !file.contains("wrapper") {
            continue;
        }
        let mut child = std::process::Command::new("bash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bash runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in [
            "trap 'kill -USR1 $launched' USR1\n",
            "trap 'kill -TERM $launched' TERM\n",
            "while kill -0 $launched 2>/dev/null; do wait $launched; status=$?; done\n",
        ] {
            assert!(text.contains(line), "{file} lacks {line:?}");
        }
        assert!(text.ends_with("exit $status\n"), "{file}");
    }
}

// ----- a parser of each system's directive lines -------------------------------------------

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `HH:MM:SS` (hours may exceed 24, as PBS and Grid Engine accept).
fn is_hms(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 3
        && parts[0].len() >= 2
        && parts.iter().all(|p| is_number(p))
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts[1] < "60"
        && parts[2] < "60"
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"')
}

/// A size with one of `units` (none allowed), e.g. `64gb`.
fn is_size(s: &str, units: &[&str]) -> bool {
    units
        .iter()
        .any(|u| s.strip_suffix(u).is_some_and(is_number))
}

/// The directive lines of a script: what follows `prefix` on lines starting with it.
fn directives<'a>(script: &'a str, prefix: &str) -> Vec<&'a str> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

/// Splits `-flag value` (value may be empty).
fn flag_value(line: &str) -> (&str, &str) {
    let line = line.strip_prefix(' ').expect("one space after the prefix");
    let line = line.strip_prefix('-').expect("a flag");
    line.split_once(' ').unwrap_or((line, ""))
}

/// `#PBS` lines as PBS Pro's and Torque's qsub document them.
fn check_pbs(script: &str) {
    let lines = directives(script, "#PBS");
    assert!(!lines.is_empty());
    for line in lines {
        let (flag, value) = flag_value(line);
        let ok = match flag {
            "N" => super::portable_name(value),
            "q" | "A" | "o" => is_word(value),
            "j" => value == "oe",
            "m" => value.chars().all(|c| "abe".contains(c)) || value == "n",
            "l" => value.split(',').all(|item| match item.split_once('=') {
                Some(("walltime", v)) => is_hms(v),
                Some(("mem", v)) => is_size(v, &["kb", "mb", "gb", "tb"]),
                Some(("select", v)) => {
                    let mut parts = v.split(':');
                    is_number(parts.next().unwrap())
                        && parts.all(|p| match p.split_once('=') {
                            Some(("ncpus" | "mpiprocs" | "ompthreads" | "ngpus", n)) => {
                                is_number(n)
                            }
                            Some(("mem", m)) => is_size(m, &["kb", "mb", "gb", "tb"]),
                            _ => false,
                        })
                }
                Some(("nodes", v)) => {
                    let mut parts = v.split(':');
                    is_number(parts.next().unwrap())
                        && parts.all(|p| match p.split_once('=') {
                            Some(("ppn" | "gpus", n)) => is_number(n),
                            _ => false,
                        })
                }
                _ => false,
            }),
            _ => false,
        };
        assert!(ok, "#PBS{line} is not in PBS's documented form");
    }
}

/// `#BSUB` lines as LSF's bsub documents them.
fn check_lsf(script: &str) {
    let lines = directives(script, "#BSUB");
    assert!(!lines.is_empty());
    for line in lines {
        let (flag, value) = flag_value(line);
        let ok = match flag {
            "J" => super::portable_name(value),
            "q" | "P" | "o" => is_word(value),
            "n" | "M" | "wt" => is_number(value),
            "x" => value.is_empty(),
            "wa" => value == "USR1",
            "W" => value
                .split_once(':')
                .is_some_and(|(h, m)| is_number(h) && is_number(m) && m.len() == 2 && m < "60"),
            "gpu" => value
                .strip_prefix("\"num=")
                .and_then(|v| v.strip_suffix('"'))
                .is_some_and(is_number),
            "R" => value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .is_some_and(|v| {
                    v.split(' ').all(|section| {
                        let inner = |name: &str| {
                            section
                                .strip_prefix(name)
                                .and_then(|s| s.strip_prefix('['))
                                .and_then(|s| s.strip_suffix(']'))
                        };
                        inner("span")
                            .and_then(|s| s.strip_prefix("ptile="))
                            .is_some_and(is_number)
                            || inner("rusage")
                                .and_then(|s| s.strip_prefix("mem="))
                                .is_some_and(is_number)
                            || inner("affinity")
                                .and_then(|s| s.strip_prefix("core("))
                                .and_then(|s| s.strip_suffix(')'))
                                .is_some_and(is_number)
                    })
                }),
            _ => false,
        };
        assert!(ok, "#BSUB{line} is not in LSF's documented form");
    }
}

/// `#$` lines as Grid Engine's qsub documents them.
fn check_sge(script: &str) {
    let lines = directives(script, "#$");
    assert!(!lines.is_empty());
    for line in lines {
        let (flag, value) = flag_value(line);
        let ok = match flag {
            "N" => super::portable_name(value),
            "q" | "P" | "o" => is_word(value),
            "S" => value.starts_with('/'),
            "j" => value == "y",
            "cwd" | "notify" | "V" => value.is_empty(),
            "pe" => value
                .split_once(' ')
                .is_some_and(|(pe, slots)| is_word(pe) && is_number(slots)),
            "l" => value.split(',').all(|item| match item.split_once('=') {
                Some(("h_rt" | "s_rt", v)) => is_hms(v),
                Some(("h_vmem", v)) => is_size(v, &["K", "M", "G", "T"]),
                _ => false,
            }),
            _ => false,
        };
        assert!(ok, "#${line} is not in Grid Engine's documented form");
    }
}

/// An HTCondor submit description: `key = value` commands with known keys and values in
/// their documented form, ending with one `queue`.
fn check_htcondor(description: &str) {
    let commands: Vec<&str> = description
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.last(), Some(&"queue"), "{description}");
    assert_eq!(commands.iter().filter(|c| **c == "queue").count(), 1);
    for command in &commands[..commands.len() - 1] {
        let (key, value) = command
            .split_once(" = ")
            .unwrap_or_else(|| panic!("{command:?} is not `key = value`"));
        let ok = match key {
            "universe" => value == "parallel",
            "should_transfer_files" => value == "IF_NEEDED",
            "when_to_transfer_output" => value == "ON_EXIT",
            "machine_count"
            | "request_cpus"
            | "request_memory"
            | "request_gpus"
            | "job_max_vacate_time" => is_number(value),
            "kill_sig" => {
                value.starts_with("SIG") && value[3..].bytes().all(|b| b.is_ascii_alphanumeric())
            }
            "executable"
            | "transfer_input_files"
            | "batch_name"
            | "accounting_group"
            | "output"
            | "error"
            | "log" => is_word(value),
            "periodic_remove" => value
                .strip_prefix("(JobStatus == 2) && (time() - EnteredCurrentStatus > ")
                .and_then(|v| v.strip_suffix(')'))
                .is_some_and(is_number),
            "requirements" => value.starts_with('('),
            _ => false,
        };
        assert!(ok, "{command:?} is not in HTCondor's documented form");
    }
}

#[test]
fn every_directive_line_parses_as_its_system_documents() {
    for (file, text) in rendered() {
        match file.split('-').next().unwrap() {
            "slurm" => assert!(directives(&text, "#SBATCH --").len() >= 6),
            "pbs" | "torque" => check_pbs(&text),
            "lsf" => check_lsf(&text),
            "sge" => check_sge(&text),
            "htcondor" if file.contains("wrapper") => {
                assert!(text.contains("./openmpiscript ./target/release/examples/pi"))
            }
            "htcondor" => check_htcondor(&text),
            other => panic!("unknown system {other}"),
        }
    }
}

/// The rich job's numbers, converted: 2 nodes x 8 ranks x 4 cpus, 2G per cpu (64 GiB per
/// node, 8 GiB per rank, 2 GiB per slot), 1-02:00:00 (26 h), stop 120 s before.
#[test]
fn the_rich_job_converts_its_numbers() {
    let pbs = rich(BatchSystem::Pbs).render().unwrap();
    assert!(pbs.contains(
        "#PBS -l select=2:ncpus=32:mpiprocs=8:ompthreads=4:mem=64gb:ngpus=4\n#PBS -l walltime=26:00:00\n"
    ));
    assert!(pbs.contains("( sleep 93480; kill -USR1 $$ ) &\n"));
    assert!(pbs.contains("mpirun --hostfile \"$PBS_NODEFILE\" -np 16 --map-by ppr:8:node "));
    let torque = JobSpec {
        pbs_flavour: PbsFlavour::Torque,
        ..rich(BatchSystem::Pbs)
    };
    let torque = torque.render().unwrap();
    assert!(torque.contains("#PBS -l nodes=2:ppn=32:gpus=4\n#PBS -l mem=128gb\n"));
    let lsf = rich(BatchSystem::Lsf).render().unwrap();
    for line in [
        "#BSUB -n 16\n",
        "#BSUB -R \"span[ptile=8] affinity[core(4)] rusage[mem=8192]\"\n",
        "#BSUB -M 8192\n",
        "#BSUB -W 26:00\n",
        "#BSUB -wa USR1\n#BSUB -wt 2\n",
    ] {
        assert!(lsf.contains(line), "{line:?} missing from\n{lsf}");
    }
    let sge = rich(BatchSystem::Sge).render().unwrap();
    for line in [
        "#$ -pe mpi 64\n",
        "#$ -l h_rt=26:00:00,s_rt=25:58:00\n",
        "#$ -l h_vmem=2G\n",
        "mpirun -np 16 --map-by slot:PE=4 ",
    ] {
        assert!(sge.contains(line), "{line:?} missing from\n{sge}");
    }
    let condor = rich(BatchSystem::Htcondor).render().unwrap();
    for line in [
        "machine_count = 2\n",
        "request_cpus = 32\n",
        "request_memory = 65536\n",
        "request_gpus = 4\n",
        "job_max_vacate_time = 120\n",
        "EnteredCurrentStatus > 93480)\n",
    ] {
        assert!(condor.contains(line), "{line:?} missing from\n{condor}");
    }
}

#[test]
fn options_a_system_cannot_express_are_errors() {
    let cases: Vec<(JobSpec, &str)> = vec![
        (
            JobSpec {
                gres: Some("gpu:2".into()),
                ..minimal(BatchSystem::Lsf)
            },
            "--gres gpu:2 cannot be expressed for LSF: --gres is Slurm's syntax",
        ),
        (
            JobSpec {
                launcher: Launcher::Srun,
                ..minimal(BatchSystem::Pbs)
            },
            "--launcher srun cannot be expressed for PBS: srun is Slurm's launcher",
        ),
        (
            JobSpec {
                launcher: Launcher::Mpiexec,
                ..minimal(BatchSystem::Htcondor)
            },
            "--launcher mpiexec cannot be expressed for HTCondor",
        ),
        (
            JobSpec {
                gpus_per_node: Some(2),
                ..minimal(BatchSystem::Sge)
            },
            "--gpus-per-node 2 cannot be expressed for Grid Engine (SGE)",
        ),
        (
            JobSpec {
                partition: Some("short".into()),
                ..minimal(BatchSystem::Htcondor)
            },
            "HTCondor has no queues",
        ),
        (
            JobSpec {
                memory: Some(Memory::PerGpu("16G".into())),
                ..minimal(BatchSystem::Pbs)
            },
            "--mem-per-gpu without --gpus-per-node",
        ),
        (
            JobSpec {
                job_name: Some("big pi".into()),
                ..minimal(BatchSystem::Sge)
            },
            "--job-name \"big pi\" is not a valid Grid Engine (SGE) job name",
        ),
        (
            JobSpec {
                command: vec!["./2pi".into()],
                ..minimal(BatchSystem::Pbs)
            },
            "--job-name \"2pi\" is not a valid PBS job name",
        ),
        (
            JobSpec {
                output: Some("pi-%j.out".into()),
                ..minimal(BatchSystem::Pbs)
            },
            "--output \"pi-%j.out\" uses %j, which PBS does not expand",
        ),
        (
            JobSpec {
                output: Some("pi-%x.out".into()),
                ..minimal(BatchSystem::Lsf)
            },
            "uses %x, which LSF does not expand: LSF expands %J",
        ),
        (
            JobSpec {
                output: Some("pi-%j.out".into()),
                ..minimal(BatchSystem::Sge)
            },
            "Grid Engine expands $JOB_ID",
        ),
        (
            JobSpec {
                output: Some("pi-%j.out".into()),
                ..minimal(BatchSystem::Htcondor)
            },
            "HTCondor expands $(Cluster)",
        ),
        (
            JobSpec {
                walltime: Some("00:01:00".into()),
                ..minimal(BatchSystem::Sge)
            },
            "--signal 60 is not shorter than --walltime \"00:01:00\"",
        ),
        (
            JobSpec {
                partition: Some("my queue".into()),
                ..minimal(BatchSystem::Lsf)
            },
            "--partition \"my queue\" cannot be written in a LSF directive",
        ),
        (
            JobSpec {
                walltime: Some("1:30".into()),
                ..minimal(BatchSystem::Pbs)
            },
            "--walltime \"1:30\" is not a walltime: use HH:MM:SS or D-HH:MM:SS",
        ),
        (
            JobSpec {
                memory: Some(Memory::PerNode("64GB".into())),
                ..minimal(BatchSystem::Pbs)
            },
            "--mem \"64GB\" is not a size",
        ),
    ];
    for (job, expected) in cases {
        let error = job.render().unwrap_err().to_string();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
    // LSF's own patterns pass.
    JobSpec {
        output: Some("pi-%J.%I.out".into()),
        ..minimal(BatchSystem::Lsf)
    }
    .render()
    .unwrap();
}

#[test]
fn the_system_is_detected_from_the_submit_commands_on_the_path() {
    let with = |commands: &'static [&'static str]| {
        BatchSystem::detect(move |c: &str| commands.contains(&c))
    };
    assert_eq!(with(&[]), BatchSystem::Slurm);
    assert_eq!(with(&["sbatch", "qsub"]), BatchSystem::Slurm);
    assert_eq!(with(&["qsub", "pbsnodes", "qstat"]), BatchSystem::Pbs);
    assert_eq!(with(&["qsub"]), BatchSystem::Pbs);
    assert_eq!(with(&["qsub", "qconf"]), BatchSystem::Sge);
    assert_eq!(with(&["bsub"]), BatchSystem::Lsf);
    assert_eq!(with(&["condor_submit"]), BatchSystem::Htcondor);
    assert_eq!(with(&["bsub", "condor_submit"]), BatchSystem::Lsf);
}

#[test]
fn submit_calls_wait_the_way_each_system_can() {
    let call = |system, wait| minimal(system).submit_call("job.x", wait).unwrap();
    let args = |c: SubmitCall| (c.program, c.args.join(" "), c.script_on_stdin);
    assert_eq!(
        args(call(BatchSystem::Slurm, false)),
        ("sbatch", "job.x".into(), false)
    );
    assert_eq!(
        args(call(BatchSystem::Slurm, true)),
        ("sbatch", "--wait job.x".into(), false)
    );
    assert_eq!(
        args(call(BatchSystem::Pbs, true)),
        ("qsub", "-W block=true job.x".into(), false)
    );
    assert_eq!(
        args(call(BatchSystem::Lsf, true)),
        ("bsub", "-K".into(), true)
    );
    assert_eq!(
        args(call(BatchSystem::Lsf, false)),
        ("bsub", "".into(), true)
    );
    assert_eq!(
        args(call(BatchSystem::Sge, true)),
        ("qsub", "-sync y job.x".into(), false)
    );
    let condor = call(BatchSystem::Htcondor, true);
    assert_eq!(condor.wait_on_log.as_deref(), Some("pi.log"));
    assert_eq!(args(condor), ("condor_submit", "job.x".into(), false));
    assert_eq!(call(BatchSystem::Htcondor, false).wait_on_log, None);
    let torque = JobSpec {
        pbs_flavour: PbsFlavour::Torque,
        ..minimal(BatchSystem::Pbs)
    };
    assert!(
        torque
            .submit_call("job.x", true)
            .unwrap_err()
            .to_string()
            .contains("Torque's qsub cannot wait")
    );
}

#[test]
fn a_requeued_job_keeps_a_checkpoint_and_requeues_itself_at_the_walltime_signal() {
    let job = JobSpec {
        walltime: Some("00:10:00".into()),
        checkpoint: Some("/scratch/me/pi checkpoint".into()),
        requeue: Some(3),
        ..spec()
    };
    let script = job.render().unwrap();
    for line in [
        "#SBATCH --requeue\n",
        "#SBATCH --open-mode=append\n",
        "export MPIDASK_CHECKPOINT='/scratch/me/pi checkpoint'\n",
        "walltime=0\n",
        "trap 'walltime=1; kill -USR1 $launched' USR1\n",
        "if [ \"$walltime\" = 1 ] && [ \"$status\" = 9 ]; then\n",
        "    if [ \"${SLURM_RESTART_COUNT:-0}\" -lt 3 ]; then\n",
        "        scontrol requeue \"$SLURM_JOB_ID\"\n",
        "exit $status\n",
    ] {
        assert!(script.contains(line), "{line:?} missing from\n{script}");
    }
    // The requeue trap comes after the plain one, so it is the one in force.
    let plain = script.find("trap 'kill -USR1 $launched' USR1").unwrap();
    let requeue = script.find("trap 'walltime=1;").unwrap();
    assert!(plain < requeue);
    // Without --requeue nothing of it is written; a checkpoint alone is an export.
    let kept = JobSpec {
        checkpoint: Some("ckpt".into()),
        ..spec()
    }
    .render()
    .unwrap();
    assert!(kept.contains("export MPIDASK_CHECKPOINT=ckpt\n"));
    assert!(!kept.contains("requeue") && !kept.contains("walltime="));
}

#[test]
fn requeue_needs_a_checkpoint_and_slurm() {
    let error = JobSpec {
        requeue: Some(10),
        ..spec()
    }
    .validate()
    .unwrap_err();
    assert_eq!(error, JobscriptError::RequeueWithoutCheckpoint);
    assert!(error.to_string().contains("--checkpoint DIR"));
    let pbs = JobSpec {
        requeue: Some(10),
        checkpoint: Some("ckpt".into()),
        ..JobSpec {
            command: spec().command,
            ..JobSpec::for_system(BatchSystem::Pbs)
        }
    };
    let error = pbs.validate().unwrap_err().to_string();
    assert!(
        error.contains("--requeue 10") && error.contains("Slurm only"),
        "{error}"
    );
    let multiline = JobSpec {
        checkpoint: Some("a\nb".into()),
        ..spec()
    };
    assert!(matches!(
        multiline.validate(),
        Err(JobscriptError::Multiline {
            flag: "checkpoint",
            ..
        })
    ));
}
