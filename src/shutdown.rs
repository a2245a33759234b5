//! The one signal future: resolves on SIGTERM (docker stop) or SIGINT (Ctrl-C).
//! It is passed down as a value; the grace period is decided in one place
//! ([`crate::startup::Application::run_until_stopped`]).

pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; draining"),
        _ = term => tracing::info!("SIGTERM received; draining"),
    }
}
