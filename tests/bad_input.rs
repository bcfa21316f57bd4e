//! Bad input from another rank under a real `mpirun`: the client program forges or breaks
//! messages (through the `internals` feature) and every case must end the job with exit
//! code 8 and one line naming the rank that received the bad bytes; nothing panics,
//! nothing is killed by a signal, nothing hangs.
//!
//! The test binary is also the program under test: started with `MPIDASK_SCENARIO=<name>`
//! it runs that scenario through `mpidask::run`.

mod support;

use libtest_mimic::{Arguments, Trial};
use mpidask::internals::inject_frame;
use mpidask::internals::protocol::{
    ArgSlot, FnId, FrameWriter, FunctionMsg, Key, Payload, Rank, TaskSpec, ToScheduler, ToWorker,
};
use mpidask::internals::task::Registry;
use mpidask::{Client, ExitCode, TaskOptions};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::{Run, check, mpirun, run_with_deadline};

/// Deadline of every job a test starts.
const DEADLINE: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

/// One frame holding `messages`, as the client's own outbox would make it.
fn frame_of<M: serde::Serialize>(messages: &[M]) -> mpidask::internals::protocol::Frame {
    let mut writer = FrameWriter::new();
    for message in messages {
        writer.push(message).expect("our messages encode");
    }
    writer.finish()
}

/// Waits for the job to be aborted by the rank that received the bad bytes.
fn wait_for_the_abort() -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_secs(30));
    anyhow::bail!("the job was not aborted within 30 s")
}

/// Runs one real task first, so the forged message arrives in a running job.
fn warm_up(client: &Client) -> anyhow::Result<()> {
    anyhow::ensure!(client.submit(square, 7u64).result()? == 49);
    Ok(())
}

fn run_scenario(name: &str) -> ! {
    match name {
        // A task naming a function id nobody registered, sent to the scheduler.
        "forged_function_id" => mpidask::run(|client| -> anyhow::Result<()> {
            warm_up(client)?;
            let forged = TaskSpec {
                key: Key(1_000_000),
                func: FnId(999),
                uses: vec![],
                args: vec![ArgSlot::Value(vec![1])],
                options: TaskOptions::default(),
                checkpoint: None,
            };
            inject_frame(
                client,
                Rank::SCHEDULER,
                frame_of(&[ToScheduler::Submit(vec![forged])]),
            );
            wait_for_the_abort()
        }),
        // A registration with an offset of its own choosing: its check word cannot match.
        "forged_offset" => mpidask::run(|client| -> anyhow::Result<()> {
            warm_up(client)?;
            fn some_function(
                _: &mpidask::internals::task::TaskInput<'_>,
            ) -> Result<mpidask::internals::protocol::Bytes, mpidask::internals::task::CallError>
            {
                Ok(Vec::new().into())
            }
            let trampoline: mpidask::internals::task::Trampoline = some_function;
            // The client's own registry made ids 0 and up; a made-up key cannot seal id 1.
            let (_, made_up) = Registry::new(12345).id_of(trampoline, || "forged".into());
            let mut registration: FunctionMsg = made_up.expect("a new function");
            registration.id = FnId(1);
            registration.offset += 4096;
            inject_frame(
                client,
                Rank::SCHEDULER,
                frame_of(&[ToScheduler::RegisterFunction(registration)]),
            );
            wait_for_the_abort()
        }),
        // A frame whose attachment table says 100,000 bytes, followed by 70,000.
        "lying_attachment" => mpidask::run(|client| -> anyhow::Result<()> {
            warm_up(client)?;
            let mut frame = frame_of(&[ToWorker::ScatterData {
                key: Key(2_000_000),
                bytes: Arc::new(vec![7u8; 100_000].into()),
            }]);
            assert_eq!(
                frame.attachments.len(),
                1,
                "the value travels as an attachment"
            );
            let short: Payload = Arc::new(vec![7u8; 70_000].into());
            frame.attachments = vec![short];
            inject_frame(client, Rank(2), frame);
            wait_for_the_abort()
        }),
        // A frame cut in the middle of its only message.
        "truncated_frame" => mpidask::run(|client| -> anyhow::Result<()> {
            warm_up(client)?;
            let mut frame = frame_of(&[ToWorker::GetData(vec![Key(1), Key(2), Key(3)])]);
            let cut = frame.bytes.len() - 3;
            frame.bytes.truncate(cut);
            inject_frame(client, Rank(2), frame);
            wait_for_the_abort()
        }),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(99)
        }
    }
}

// ----- tests -------------------------------------------------------------------------------

fn this_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("current exe")
}

fn scenario_under_mpirun(np: usize, scenario: &str) -> Command {
    let mut command = mpirun(np, &this_binary(), &[]);
    command.env("MPIDASK_SCENARIO", scenario);
    command
}

/// The job ended with exit 8 and exactly one ERROR line saying `expected` (which names
/// the receiving rank); the only other ERROR lines are ranks reporting the launcher's
/// SIGTERM as it ends the job after the abort; nothing panicked.
fn expect_exit_8(run: &Run, expected: &str) {
    run.expect_code(ExitCode::Internal.code());
    let errors = run.log_lines("ERROR");
    let (ours, others): (Vec<&str>, Vec<&str>) =
        errors.iter().partition(|line| line.contains(expected));
    assert_eq!(
        ours.len(),
        1,
        "one line saying {expected:?}, got {errors:#?}\n{}",
        run.dump()
    );
    assert!(
        others
            .iter()
            .all(|line| line.contains("] ERROR: stopping: rank ") && line.contains("SIGTERM")),
        "no other error than the launcher's SIGTERM: {others:#?}\n{}",
        run.dump()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "nothing panics\n{}",
        run.dump()
    );
}

fn test(scenario: &'static str, np: usize, expected: &'static str) -> Trial {
    Trial::test(format!("{scenario}_exits_8"), move || {
        check(|| {
            let run = run_with_deadline(scenario_under_mpirun(np, scenario), DEADLINE);
            expect_exit_8(&run, expected);
        })
    })
}

fn main() {
    if let Ok(name) = std::env::var("MPIDASK_SCENARIO") {
        run_scenario(&name);
    }
    let mut args = Arguments::from_args();
    // The jobs share two cores; one at a time keeps their timing realistic.
    args.test_threads.get_or_insert(1);
    let tests = vec![
        test(
            "forged_function_id",
            4,
            "rank 0 received from rank 1 task #1000000 calling function id 999, which was \
             never registered; aborting the job",
        ),
        test(
            "forged_offset",
            3,
            "rank 0 received from rank 1 a registration of function id 1 (\"forged\") whose \
             check word does not match the job's key",
        ),
        test(
            "lying_attachment",
            4,
            "rank 2 received a malformed message from rank 1: an attachment of 70000 bytes \
             where 100000 were announced; aborting the job",
        ),
        test("truncated_frame", 4, "rank 2 received a malformed frame of"),
    ];
    libtest_mimic::run(&args, tests).exit();
}
