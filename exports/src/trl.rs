//! TRL's explicit-prompt preference format: one JSON object a line with `prompt`, `chosen`,
//! `rejected` as plain text, plus Moat's metadata columns. Ties and both-bad votes carry no
//! preference and are left out (and counted).

use std::io::Write;

use serde::Serialize;

use crate::record::rfc3339_utc;
use crate::{Choice, ExportSummary, RecordWriter, VoteRecord};

#[derive(Serialize)]
struct TrlRow<'a> {
    prompt: &'a str,
    chosen: &'a str,
    rejected: &'a str,
    study: &'a str,
    model_chosen: &'a str,
    model_rejected: &'a str,
    rater: &'a str,
    vote_id: i64,
    created: String,
}

pub struct TrlJsonlWriter<W: Write> {
    out: W,
    summary: ExportSummary,
}

impl<W: Write> TrlJsonlWriter<W> {
    pub fn new(out: W) -> Self {
        TrlJsonlWriter {
            out,
            summary: ExportSummary::default(),
        }
    }
}

impl<W: Write> RecordWriter for TrlJsonlWriter<W> {
    fn write_record(&mut self, record: &VoteRecord) -> std::io::Result<()> {
        let Some((model_chosen, chosen, model_rejected, rejected)) = record.chosen_rejected_text()
        else {
            match record.choice {
                Choice::BothBad => self.summary.skipped_both_bad += 1,
                _ => self.summary.skipped_ties += 1,
            }
            return Ok(());
        };
        let prompt = record.prompt_text();
        let row = TrlRow {
            prompt: &prompt,
            chosen: &chosen,
            rejected: &rejected,
            study: &record.study,
            model_chosen,
            model_rejected,
            rater: &record.rater,
            vote_id: record.vote_id,
            created: rfc3339_utc(record.created_ms),
        };
        serde_json::to_writer(&mut self.out, &row)?;
        self.out.write_all(b"\n")?;
        self.summary.rows_written += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<ExportSummary> {
        self.out.flush()?;
        Ok(self.summary)
    }
}
