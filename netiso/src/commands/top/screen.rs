//! `netiso top`'s full-screen view (ratatui): the rows as a table, a status line, keys
//! to sort and quit.
use std::time::{Duration, Instant};

use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
};

use super::{HEADER, Row, Sampler, SortKey, cells};

/// The column each sort key orders by, to mark it in the header.
fn sorted_column(sort: SortKey) -> usize {
    match sort {
        SortKey::Container => 0,
        SortKey::Traffic | SortKey::Rx => 1,
        SortKey::Tx => 2,
        SortKey::Drops => 5,
        SortKey::Limit => 8,
    }
}

pub(super) fn run(sampler: &mut Sampler, interval: Duration, sort: SortKey) -> anyhow::Result<()> {
    // Alternate screen and raw mode, put back on return and on panic.
    let mut terminal = ratatui::init();
    let result = refresh_until_quit(&mut terminal, sampler, interval, sort);
    ratatui::restore();
    result
}

fn refresh_until_quit(
    terminal: &mut DefaultTerminal,
    sampler: &mut Sampler,
    interval: Duration,
    mut sort: SortKey,
) -> anyhow::Result<()> {
    let mut rows: Option<Vec<Row>> = None;
    let mut problem: Option<String> = None;
    // The first sample was just taken.
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|frame| draw(frame, rows.as_deref(), sort, problem.as_deref()))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                sort = match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    KeyCode::Char('a') => SortKey::Traffic,
                    KeyCode::Char('r') => SortKey::Rx,
                    KeyCode::Char('t') => SortKey::Tx,
                    KeyCode::Char('d') => SortKey::Drops,
                    KeyCode::Char('l') => SortKey::Limit,
                    KeyCode::Char('n') => SortKey::Container,
                    _ => sort,
                };
                if let Some(rows) = &mut rows {
                    sort.sort(rows);
                }
            }
            continue;
        }
        match sampler.rows(sort) {
            Ok(fresh) => {
                rows = Some(fresh);
                problem = None;
            }
            // Shown, and tried again next time: the agent may be restarting.
            Err(error) => problem = Some(format!("{error:#}")),
        }
        next = Instant::now() + interval;
    }
}

fn draw(frame: &mut Frame, rows: Option<&[Row]>, sort: SortKey, problem: Option<&str>) {
    let [status, body, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let summary = match (problem, rows) {
        (Some(problem), _) => format!("netiso top: {problem}"),
        (None, None) => "netiso top: measuring the first second…".to_owned(),
        (None, Some(rows)) => format!(
            "netiso top: {} containers, sorted by {}",
            rows.len(),
            format!("{sort:?}").to_lowercase()
        ),
    };
    frame.render_widget(Paragraph::new(summary), status);
    let marked = sorted_column(sort);
    let header = TableRow::new(HEADER.iter().enumerate().map(|(i, title)| {
        let title = if i == marked {
            format!("{title}*")
        } else {
            (*title).to_owned()
        };
        Cell::from(title)
    }))
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let lines: Vec<TableRow> = rows
        .unwrap_or_default()
        .iter()
        .map(|row| TableRow::new(cells(row).map(Cell::from)))
        .collect();
    let longest_id = rows
        .unwrap_or_default()
        .iter()
        .map(|r| r.container.len())
        .max()
        .unwrap_or_default();
    let widths = [
        Constraint::Length(longest_id.max(HEADER[0].len() + 1) as u16),
        Constraint::Length(13),
        Constraint::Length(13),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(13),
        Constraint::Length(10),
        Constraint::Length(12),
    ];
    frame.render_widget(Table::new(lines, widths).header(header), body);
    frame.render_widget(
        Line::from("sort: a traffic  r rx  t tx  d drops  l limit use  n name    q quit"),
        keys,
    );
}
