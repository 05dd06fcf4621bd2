//! Errors from the API server as an operator reads them. kube's own rendering of a refused
//! request prints the response's `Debug` (`ApiError: … (Status { status: Some(Failure), … })`);
//! here it is the server's message, code and reason.

use std::error::Error;

use crate::error_chain::{causes_with, escape};

/// The error and its causes on one line, an API server's answer written as
/// `<message> (HTTP <code> <reason>)`.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    causes(error).join(": ")
}

/// [`causes`](crate::error_chain::causes), an API server's answer written as
/// `<message> (HTTP <code> <reason>)`: what every command and the reconciler show.
pub fn causes(error: &(dyn Error + 'static)) -> Vec<String> {
    let text_of = |cause: &(dyn Error + 'static)| match cause.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => Some(escape(&status_text(status), false).into_owned()),
        _ => None,
    };
    match text_of(error) {
        Some(text) => vec![text],
        None => causes_with(error, text_of),
    }
}

fn status_text(status: &kube::core::Status) -> String {
    let code = match status.reason.as_str() {
        "" => format!("HTTP {}", status.code),
        reason => format!("HTTP {} {reason}", status.code),
    };
    if status.message.is_empty() {
        code
    } else {
        format!("{} ({code})", status.message)
    }
}

/// Whether the API server refused the request itself for want of rights (401, 403): a human
/// must grant them; retrying changes nothing.
pub fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 401 || status.code == 403)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read ConfigMap team/trust")]
    struct Reading(#[source] kube::Error);

    fn forbidden() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(
                "configmaps \"trust\" is forbidden: User \"system:serviceaccount:lockstep:lockstep\" cannot get resource \"configmaps\" in the namespace \"team\"",
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        )
    }

    #[test]
    fn an_api_error_is_its_message_code_and_reason_never_debug() {
        let text = describe(&Reading(forbidden()));
        assert_eq!(
            text,
            "cannot read ConfigMap team/trust: configmaps \"trust\" is forbidden: User \"system:serviceaccount:lockstep:lockstep\" cannot get resource \"configmaps\" in the namespace \"team\" (HTTP 403 Forbidden)"
        );
        assert!(!text.contains("Status {"), "{text}");
        assert!(is_forbidden(&forbidden()));
    }
}
