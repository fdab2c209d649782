//! `cm-client pull`: streams PullImage and shows it: a bar per layer and an overall bar on a terminal, plain
//! lines (phase changes and layer counts) otherwise. `run` and `create` pull a missing image the same way, on
//! stderr, as docker does.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use cm_api::v1::{self as pb, LayerPhase, pull_image_response::Event};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::connect::Client;
use crate::format::{short_id, size};

/// Where pull progress goes: stdout for `pull`, stderr when a pull happens on the way to something else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    fn is_terminal(self) -> bool {
        match self {
            Output::Stdout => std::io::stdout().is_terminal(),
            Output::Stderr => std::io::stderr().is_terminal(),
        }
    }

    fn draw_target(self) -> ProgressDrawTarget {
        match self {
            Output::Stdout => ProgressDrawTarget::stdout(),
            Output::Stderr => ProgressDrawTarget::stderr(),
        }
    }

    /// Writes one line; a closed output is not worth failing the pull for.
    fn line(self, line: &str) {
        let _ = match self {
            Output::Stdout => writeln!(std::io::stdout(), "{line}"),
            Output::Stderr => writeln!(std::io::stderr(), "{line}"),
        };
    }
}

/// Pulls `reference`, rendering progress and a status line on `out`; returns the final message.
pub async fn pull(
    client: &mut Client,
    reference: &str,
    auth: Option<pb::RegistryAuth>,
    out: Output,
) -> anyhow::Result<pb::PullDone> {
    let mut stream = client
        .pull_image(pb::PullImageRequest { reference: reference.to_string(), auth })
        .await
        .map_err(crate::error::status_error)?
        .into_inner();
    let mut view: Box<dyn View> = if out.is_terminal() { Box::new(Bars::new(out)) } else { Box::new(Lines::new(out)) };
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => anyhow::bail!("the server ended the pull of {reference} without saying it was done"),
            Err(status) => {
                view.abandon();
                return Err(crate::error::status_error(status));
            }
        };
        match message.event {
            Some(Event::Resolved(r)) => view.resolved(&r),
            Some(Event::Layer(l)) => view.layer(&l),
            Some(Event::Summary(s)) => view.summary(&s),
            Some(Event::Done(done)) => {
                view.finish();
                if done.up_to_date {
                    out.line(&format!("Image is up to date for {}", done.reference));
                } else {
                    out.line(&format!(
                        "Downloaded newer image for {} ({})",
                        done.reference,
                        size(done.downloaded_bytes)
                    ));
                }
                return Ok(done);
            }
            None => {}
        }
    }
}

fn phase_name(phase: i32) -> &'static str {
    match LayerPhase::try_from(phase).unwrap_or(LayerPhase::Unspecified) {
        LayerPhase::Waiting => "Waiting",
        LayerPhase::Downloading => "Downloading",
        LayerPhase::Verifying => "Verifying",
        LayerPhase::Extracting => "Extracting",
        LayerPhase::Done => "Pull complete",
        LayerPhase::AlreadyExists => "Already exists",
        LayerPhase::Unspecified => "",
    }
}

trait View {
    fn resolved(&mut self, r: &pb::PullResolved);
    fn layer(&mut self, l: &pb::LayerProgress);
    fn summary(&mut self, s: &pb::PullSummary);
    fn finish(&mut self);
    fn abandon(&mut self);
}

/// Plain lines for logs and pipes: one per phase change, one per completed layer count.
struct Lines {
    out: Output,
    phases: HashMap<String, i32>,
    layers_done: i32,
}

impl Lines {
    fn new(out: Output) -> Self {
        Lines { out, phases: HashMap::new(), layers_done: 0 }
    }
}

impl View for Lines {
    fn resolved(&mut self, r: &pb::PullResolved) {
        let p = r.platform.clone().unwrap_or_default();
        let platform = if p.variant.is_empty() {
            format!("{}/{}", p.os, p.architecture)
        } else {
            format!("{}/{}/{}", p.os, p.architecture, p.variant)
        };
        self.out.line(&format!(
            "{}: resolved to {} ({platform}, {} layers, {})",
            r.reference,
            r.manifest_digest,
            r.layers.len(),
            size(r.total_bytes)
        ));
    }

    fn layer(&mut self, l: &pb::LayerProgress) {
        if self.phases.insert(l.digest.clone(), l.phase) != Some(l.phase) {
            self.out.line(&format!("{}: {}", short_id(&l.digest), phase_name(l.phase)));
        }
    }

    fn summary(&mut self, s: &pb::PullSummary) {
        if s.layers_done != self.layers_done {
            self.layers_done = s.layers_done;
            self.out.line(&format!(
                "{}/{} layers, {} / {}",
                s.layers_done,
                s.layers_total,
                size(s.current_bytes),
                size(s.total_bytes)
            ));
        }
    }

    fn finish(&mut self) {}
    fn abandon(&mut self) {}
}

/// Terminal bars: one per layer and an overall one.
struct Bars {
    out: Output,
    multi: Option<MultiProgress>,
    layers: HashMap<String, ProgressBar>,
    total: Option<ProgressBar>,
}

impl Bars {
    fn new(out: Output) -> Self {
        Bars { out, multi: None, layers: HashMap::new(), total: None }
    }
}

impl View for Bars {
    fn resolved(&mut self, r: &pb::PullResolved) {
        let multi = MultiProgress::with_draw_target(self.out.draw_target());
        let _ = multi.println(format!("{}: resolved to {}", r.reference, r.manifest_digest));
        let layer_style = ProgressStyle::with_template(
            "{prefix:.bold} {msg:<15} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10}",
        )
        .expect("static template")
        .progress_chars("=> ");
        for layer in &r.layers {
            let bar = multi.add(ProgressBar::new(layer.size.max(0) as u64));
            bar.set_style(layer_style.clone());
            bar.set_prefix(short_id(&layer.digest).to_string());
            bar.set_message("Waiting");
            self.layers.insert(layer.digest.clone(), bar);
        }
        let total = multi.add(ProgressBar::new(r.total_bytes.max(0) as u64));
        total.set_style(
            ProgressStyle::with_template("{prefix:.bold} {msg:<15} [{bar:30.cyan}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        total.set_prefix("total       ");
        total.set_message(format!("0/{} layers", r.layers.len()));
        self.total = Some(total);
        self.multi = Some(multi);
    }

    fn layer(&mut self, l: &pb::LayerProgress) {
        if let Some(bar) = self.layers.get(&l.digest) {
            bar.set_position(l.current_bytes.max(0) as u64);
            bar.set_message(phase_name(l.phase));
            let phase = LayerPhase::try_from(l.phase).unwrap_or(LayerPhase::Unspecified);
            if matches!(phase, LayerPhase::Done | LayerPhase::AlreadyExists) {
                bar.finish();
            }
        }
    }

    fn summary(&mut self, s: &pb::PullSummary) {
        if let Some(total) = &self.total {
            total.set_position(s.current_bytes.max(0) as u64);
            total.set_message(format!("{}/{} layers", s.layers_done, s.layers_total));
        }
    }

    fn finish(&mut self) {
        if let Some(total) = &self.total {
            total.finish();
        }
    }

    fn abandon(&mut self) {
        for bar in self.layers.values().chain(self.total.as_ref()) {
            bar.abandon();
        }
    }
}
