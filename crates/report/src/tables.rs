//! The report's tables: built as polars frames (written as CSV), rendered as Markdown. One file
//! per family of tables; `common` and `compare` are what they share, the README is `readme`.

use std::path::Path;

use polars::prelude::*;
use study::{CellState, Study};

use crate::energy::EnergyModel;
use crate::results::CellResult;
use crate::writer::ReportWriter;
use crate::{Claims, ReportError};

mod accuracy;
mod budget;
mod claims;
mod common;
mod compare;
mod hardware;
mod quality;
mod readme;
mod variation;

pub use common::Table;

/// Every table of a report.
pub struct Tables {
    /// The tables, in the order the README shows them.
    pub tables: Vec<Table>,
    /// What the claim, stage and variation tables find, one sentence per benchmark and table,
    /// with the intervals (empty where they have no comparison).
    pub findings: Vec<String>,
    /// Every failed cell: (its label, why).
    pub failed: Vec<(String, String)>,
}

impl Tables {
    /// Builds every table from the results.
    pub fn build(
        study: &Study,
        results: &[CellResult],
        claims: &Claims,
        energy: &EnergyModel,
    ) -> Result<Self, ReportError> {
        let mut tables = Vec::new();
        let mut findings = Vec::new();
        tables.push(accuracy::accuracy_table(study, results)?);
        tables.push(claims::claim_table(study, results, claims, &mut findings)?);
        tables.push(claims::stage_table(study, results, &mut findings)?);
        // only a profile that trains some method at several budgets has this table
        let budget = budget::budget_table(study, results, &mut findings)?;
        if budget.frame.height() > 0 {
            tables.push(budget);
        }
        tables.push(accuracy::ptq_table(study, results)?);
        tables.push(hardware::hardware_table(study, results)?);
        tables.push(hardware::energy_table(study, results, energy)?);
        tables.push(quality::adc_quality_table(study, results)?);
        tables.push(variation::variation_table(study, results)?);
        tables.push(variation::variation_claim_table(study, results, &mut findings)?);
        let failed = results
            .iter()
            .filter(|r| r.state == CellState::Failed)
            .map(|r| {
                let why = r.failure.as_ref().map_or_else(|| "failed".to_string(), |f| f.message.clone());
                (r.cell.label(), why)
            })
            .collect();
        Ok(Self { tables, findings, failed })
    }

    /// Writes `<stem>.csv` and `<stem>.md` for every table.
    pub fn write(&self, out: &mut ReportWriter) -> Result<(), ReportError> {
        for Table { stem, frame, markdown: md } in &self.tables {
            let mut df = frame.clone();
            let mut buf = Vec::new();
            // accuracies are counts over at most a few 10^4 images: six decimals hold them exactly,
            // and the files stay free of binary-fraction noise such as 0.8289999999999998
            CsvWriter::new(&mut buf).with_float_precision(Some(6)).finish(&mut df)?;
            out.add(Path::new(&format!("{stem}.csv")), buf);
            out.add(Path::new(&format!("{stem}.md")), md.as_bytes());
        }
        Ok(())
    }

    /// The findings as one paragraph.
    pub fn finding(&self) -> String {
        self.findings.join(" ")
    }

    /// The Markdown of one table.
    pub fn markdown(&self, stem: &str) -> &str {
        self.tables.iter().find(|t| t.stem == stem).map_or("", |t| t.markdown.as_str())
    }
}
