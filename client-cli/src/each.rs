//! Commands that take several containers and act on each in turn (start, stop, kill, rm, wait).

use std::future::Future;

use crate::error::report_status;

/// Runs `op` for each container, printing its line on success and "cm-client: <error>" on failure, and goes on
/// after a failure as docker does. Returns the exit code: 1 if any failed.
pub async fn for_each<F, Fut>(containers: Vec<String>, mut op: F) -> i32
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<String>, tonic::Status>>,
{
    let mut code = 0;
    for container in containers {
        match op(container).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(status) => {
                report_status(status);
                code = crate::error::FAILURE;
            }
        }
    }
    code
}
