//! One input file through the hook chain (contract §8).
//!
//! A reader thread cuts the file into records and groups them into requests (one record each
//! with SingleRecord; up to the payload limit and `--max-records` with MultiRecord); a pool of
//! `--concurrency` threads runs the requests through the same [`HookChain`] `serve` uses; this
//! thread writes the outputs in input order, whatever order the requests finish in. A
//! MultiRecord request whose answer cannot be cut into one output per record, or that fails, is
//! retried record by record, so a bad record is found and named exactly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use bytes::Bytes;

use super::progress::{CountingReader, Progress};
use super::records::{self, Format, Record, RecordError};
use super::{BatchError, Settings};
use crate::config::{AssembleWith, OnError, SplitType, Strategy};
use crate::handler::{HookChain, HookResponse, Invocation, Plan, RequestContext};
use crate::server::error::ApiError;

/// What the job shares with every file.
pub struct Engine<'a> {
    /// The model's hook chain.
    pub chain: &'a HookChain,
    /// Negotiated once for the job's content type and accept.
    pub plan: Plan,
    /// The job's settings.
    pub settings: &'a Settings,
    /// Job progress.
    pub progress: &'a Progress,
}

/// How a file ended.
#[derive(Debug)]
pub enum FileOutcome {
    /// Every record has an output (or a placeholder).
    Done {
        /// Records read.
        records: usize,
        /// Placeholders written for bad records.
        placeholders: usize,
    },
    /// `--on-error fail` and a bad record: no output.
    Failed(RecordError),
}

/// A request's records; each is the filtered bytes to send or why it cannot be sent.
struct Work {
    seq: usize,
    items: Vec<(Record, Result<Vec<u8>, RecordError>)>,
}

/// The outputs of a request, in record order.
struct Done {
    seq: usize,
    outputs: Vec<Result<Vec<u8>, RecordError>>,
    csv_header: Option<Vec<u8>>,
}

impl Engine<'_> {
    /// Processes the file at `input` (`rel` names it in logs) and writes the outputs to `out`.
    pub fn process(&self, input: &Path, rel: &str, out: &Path) -> Result<FileOutcome, BatchError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BatchError::Io { path, source }
        };
        let file = std::fs::File::open(input).map_err(io(input))?;
        let mut reader =
            open_records(CountingReader::new(file, self.progress)).map_err(io(input))?;
        let out_file = std::fs::File::create(out).map_err(io(out))?;
        let mut writer = std::io::BufWriter::new(out_file);
        let outcome = self.run(&mut *reader, rel, &mut writer)?;
        writer.flush().map_err(io(out))?;
        writer.get_ref().sync_all().map_err(io(out))?;
        Ok(outcome)
    }

    fn run(
        &self,
        reader: &mut (dyn BufRead + Send),
        rel: &str,
        writer: &mut dyn Write,
    ) -> Result<FileOutcome, BatchError> {
        let s = self.settings;
        let mut line_no = 0;
        let header = match (s.split, s.processing.input) {
            (SplitType::Line, Format::Csv) => {
                match records::read_line(reader, &mut line_no).map_err(read_error(rel))? {
                    Some(h) => Some(s.processing.filter_input(h.line, &h.raw).map_err(|e| {
                        BatchError::BadHeader {
                            file: rel.to_owned(),
                            reason: e.message,
                        }
                    })?),
                    None => None,
                }
            }
            _ => None,
        };
        let stop_flag = AtomicBool::new(false);
        let stop = &stop_flag;
        let (work_tx, work_rx) = mpsc::sync_channel::<Work>(s.concurrency * 2);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        std::thread::scope(|scope| {
            // The reader owns the sender: when it is done the workers see the channel close.
            let lines = &mut line_no;
            let reader_thread = scope.spawn(move || self.read(reader, lines, work_tx, stop));
            for _ in 0..s.concurrency {
                let done_tx = done_tx.clone();
                let (work_rx, header) = (&work_rx, header.as_deref());
                scope.spawn(move || {
                    loop {
                        // The lock is held only to take the next request.
                        let next = work_rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok(work) = next else { break };
                        if stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        let done = self.invoke_work(rel, header, &work);
                        // A gone writer has set `stop`: keep draining so the reader never
                        // blocks on a full channel.
                        let _ = done_tx.send(done);
                    }
                });
            }
            drop(done_tx);
            let written = self.write(done_rx, writer, stop);
            stop.store(true, Ordering::Relaxed);
            let read = reader_thread
                .join()
                .map_err(|_| BatchError::Crashed("the record reader panicked".to_owned()))?;
            match (written?, read) {
                (FileOutcome::Failed(e), _) => Ok(FileOutcome::Failed(e)),
                (_, Err(e)) => Ok(FileOutcome::Failed(RecordError::validation(
                    line_no_after(&e),
                    format!("the file cannot be read: {}", e.1),
                ))),
                (done, Ok(())) => Ok(done),
            }
        })
    }

    /// Cuts the file into requests. Owning the sender closes the channel when the reader ends.
    #[allow(clippy::needless_pass_by_value)]
    fn read(
        &self,
        reader: &mut (dyn BufRead + Send),
        line_no: &mut usize,
        work_tx: mpsc::SyncSender<Work>,
        stop: &AtomicBool,
    ) -> Result<(), (usize, std::io::Error)> {
        let s = self.settings;
        let mut seq = 0;
        let mut send = |items: Vec<(Record, Result<Vec<u8>, RecordError>)>| {
            let work = Work { seq, items };
            seq += 1;
            work_tx.send(work).is_ok() && !stop.load(Ordering::Relaxed)
        };
        if s.split == SplitType::None {
            let mut raw = Vec::new();
            reader.read_to_end(&mut raw).map_err(|e| (1, e))?;
            let record = Record { line: 1, raw };
            let sent = self.prepare(&record);
            send(vec![(record, sent)]);
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while let Some(record) = records::read_line(reader, line_no).map_err(|e| (*line_no, e))? {
            let sent = self.prepare(&record);
            let len = sent.as_ref().map_or(0, |b| b.len() + 1);
            let full = s.strategy == Strategy::SingleRecord
                || batch.len() >= s.max_records
                || batch_bytes + len > s.max_payload_bytes;
            if full && !batch.is_empty() {
                if !send(std::mem::take(&mut batch)) {
                    return Ok(());
                }
                batch_bytes = 0;
            }
            batch_bytes += len;
            batch.push((record, sent));
            // A single record goes at once: waiting for the next line to know the request is
            // full would hold it back while the input blocks (a pipe, a slow download).
            if s.strategy == Strategy::SingleRecord {
                if !send(std::mem::take(&mut batch)) {
                    return Ok(());
                }
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            send(batch);
        }
        Ok(())
    }

    /// The bytes to send for a record: filtered, and within the payload limit.
    fn prepare(&self, record: &Record) -> Result<Vec<u8>, RecordError> {
        let sent = self
            .settings
            .processing
            .filter_input(record.line, &record.raw)?;
        let limit = self.settings.max_payload_bytes;
        if sent.len() > limit {
            return Err(RecordError {
                line: record.line,
                code: 413,
                error_type: "payload_too_large".to_owned(),
                message: format!(
                    "the record is {} bytes, larger than the payload limit of {} MiB (`--max-payload-mb`)",
                    sent.len(),
                    limit / (1024 * 1024)
                ),
            });
        }
        Ok(sent)
    }

    /// Runs one request and returns one output per record.
    fn invoke_work(&self, rel: &str, header: Option<&[u8]>, work: &Work) -> Done {
        let mut outputs: Vec<Option<Result<Vec<u8>, RecordError>>> = vec![None; work.items.len()];
        let mut csv_header = None;
        let ready: Vec<usize> = work
            .items
            .iter()
            .enumerate()
            .filter(|(_, (_, sent))| sent.is_ok())
            .map(|(i, _)| i)
            .collect();
        let sent = |i: usize| {
            work.items[i]
                .1
                .as_ref()
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let request_id = |part: &str| format!("{rel}#{}{part}", work.seq);
        if ready.len() > 1 {
            let bodies: Vec<Vec<u8>> = ready.iter().map(|&i| sent(i).to_vec()).collect();
            let answer = self.invoke(request_id(""), records::request_body(header, &bodies));
            match answer.map(|a| records::split_answer(&a.body, &a.content_type, ready.len())) {
                Ok(Some(split)) => {
                    csv_header = split.header;
                    for (&i, out) in ready.iter().zip(split.outputs) {
                        outputs[i] = Some(Ok(out));
                    }
                }
                Ok(None) => tracing::debug!(
                    file = rel,
                    "the answer does not have one output per record; sending the records one by one"
                ),
                Err(err) => tracing::debug!(
                    file = rel,
                    error = %err.message,
                    "a MultiRecord request failed; sending its records one by one to find the bad one"
                ),
            }
        }
        for &i in &ready {
            if outputs[i].is_some() {
                continue;
            }
            let line = work.items[i].0.line;
            let body = records::request_body(header, &[sent(i).to_vec()]);
            let result = self
                .invoke(request_id(&format!(".{i}")), body)
                .map_err(|e| RecordError { line, ..e })
                .and_then(|a| {
                    let split = records::split_answer(&a.body, &a.content_type, 1)
                        .ok_or_else(|| RecordError::validation(line, "the answer is empty"))?;
                    if csv_header.is_none() {
                        csv_header = split.header;
                    }
                    Ok(split.outputs.into_iter().next().unwrap_or_default())
                });
            outputs[i] = Some(result);
        }
        let outputs = work
            .items
            .iter()
            .zip(outputs)
            .map(|((record, sent), out)| match (sent, out) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), Some(Ok(out))) => self.settings.processing.finish_output(record, out),
                (Ok(_), Some(Err(e))) => Err(e),
                (Ok(_), None) => Err(RecordError::validation(record.line, "no answer")),
            })
            .collect();
        Done {
            seq: work.seq,
            outputs,
            csv_header,
        }
    }

    fn invoke(&self, request_id: String, body: Vec<u8>) -> Result<HookResponse, RecordError> {
        let s = self.settings;
        let invocation = Invocation {
            body: Bytes::from(body),
            content_type: Some(s.content_type.clone()),
            accept: Some(s.accept.clone()),
            plan: self.plan,
            ctx: RequestContext {
                request_id,
                headers: vec![
                    ("content-type".to_owned(), s.content_type.clone()),
                    ("accept".to_owned(), s.accept.clone()),
                ],
                custom_attributes: None,
            },
        };
        self.chain.invoke(&invocation).map_err(|err| {
            let api = ApiError::from(err);
            RecordError {
                line: 0,
                code: api.error_type.status().as_u16(),
                error_type: api.error_type.as_str().to_owned(),
                message: api.message,
            }
        })
    }

    /// Writes outputs in request order; stops at the first bad record with `--on-error fail`.
    fn write(
        &self,
        done_rx: mpsc::Receiver<Done>,
        writer: &mut dyn Write,
        stop: &AtomicBool,
    ) -> Result<FileOutcome, BatchError> {
        let s = self.settings;
        let io = |source| BatchError::Io {
            path: "<output>".into(),
            source,
        };
        let mut pending = BTreeMap::new();
        let (mut next, mut records, mut placeholders) = (0, 0, 0);
        let mut header_written = false;
        let end = match s.assemble {
            AssembleWith::Line => &b"\n"[..],
            AssembleWith::None => &b""[..],
        };
        for done in done_rx {
            pending.insert(done.seq, done);
            while let Some(done) = pending.remove(&next) {
                next += 1;
                if !header_written
                    && !s.processing.rewrites_output()
                    && let Some(header) = &done.csv_header
                {
                    writer.write_all(header).map_err(io)?;
                    writer.write_all(b"\n").map_err(io)?;
                    header_written = true;
                }
                let n = done.outputs.len();
                for output in done.outputs {
                    records += 1;
                    match output {
                        Ok(bytes) => writer.write_all(&bytes).map_err(io)?,
                        Err(err) if s.on_error == OnError::Placeholder => {
                            placeholders += 1;
                            self.progress.suspend(|| {
                                tracing::warn!(line = err.line, error = %err.message, "bad record; wrote a placeholder");
                            });
                            writer.write_all(&err.placeholder()).map_err(io)?;
                        }
                        Err(err) => {
                            stop.store(true, Ordering::Relaxed);
                            return Ok(FileOutcome::Failed(err));
                        }
                    }
                    writer.write_all(end).map_err(io)?;
                }
                // Flushed per request: what a killed job leaves is whole records in a partial file.
                writer.flush().map_err(io)?;
                self.progress.wrote_records(n as u64);
            }
        }
        Ok(FileOutcome::Done {
            records,
            placeholders,
        })
    }
}

fn line_no_after(e: &(usize, std::io::Error)) -> usize {
    e.0 + 1
}

fn read_error(rel: &str) -> impl Fn(std::io::Error) -> BatchError + '_ {
    move |source| BatchError::Io {
        path: rel.into(),
        source,
    }
}

/// A buffered reader of the records' bytes: gunzipped when the file starts with gzip's magic
/// bytes, whatever its name.
fn open_records<'a, R: Read + Send + 'a>(
    inner: R,
) -> std::io::Result<Box<dyn BufRead + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, inner);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    })
}
