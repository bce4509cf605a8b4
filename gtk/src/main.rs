//! `sotto-gtk`: Sotto's desktop app, a GTK 4 + libadwaita thin client of `org.sotto.Sotto1`
//! on the session bus (docs/desktop.md). It never opens the daemon's socket or database.

mod bus;
mod ui;

use adw::prelude::*;
use gtk::glib;

pub const APP_ID: &str = "org.sotto.Sotto";

fn main() -> glib::ExitCode {
    let started = std::time::Instant::now();
    if std::env::args().any(|a| a == "--version") {
        println!("sotto-gtk {}", env!("CARGO_PKG_VERSION"));
        return glib::ExitCode::SUCCESS;
    }
    // Runs from target/ without installing: the icon and the bundled CSS are in the binary,
    // and nothing here reads a GSettings schema.
    let app = adw::Application::builder().application_id(APP_ID).build();
    app.connect_startup(|_| ui::load_css());
    app.connect_activate(move |app| {
        if let Some(w) = app.active_window() {
            w.present();
            return;
        }
        ui::Ui::build(app, started);
    });
    // GTK's own options only; ours (--version) are handled above.
    let args: Vec<String> = std::env::args().take(1).collect();
    app.run_with_args(&args)
}
