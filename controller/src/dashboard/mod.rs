//! The live dashboard: one static page (HTML, CSS and plain JavaScript, nothing to build)
//! served by the controller at `/dashboard`. The page itself holds no data: it asks for the
//! admin token (or takes it from the URL's `#token=` fragment, which never reaches a server)
//! and reads and drives the admin API with it, so everything it shows or changes needs the
//! token exactly as the CLI does.

use http::{HeaderValue, Response, StatusCode, header};

use crate::http::{ResponseBody, text};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// The dashboard's files by path; `None` for any other path.
pub fn serve(path: &str) -> Option<Response<ResponseBody>> {
    let (content_type, body) = match path {
        "/dashboard" | "/dashboard/" => ("text/html; charset=utf-8", PAGE),
        "/dashboard/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut response = text(StatusCode::OK, content_type, body.to_owned());
    let headers = response.headers_mut();
    // Only this page's own files, its own API, no frames, no inline code.
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_with_a_strict_policy_and_nothing_else() {
        for path in ["/dashboard", "/dashboard/app.js", "/dashboard/style.css"] {
            let response = serve(path).expect(path);
            assert_eq!(response.status(), StatusCode::OK);
            let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii");
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        }
        assert!(serve("/dashboard/../admin").is_none());
        assert!(serve("/dashboard/other.js").is_none());
        // No inline script or style: the policy above would block it.
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("style="),
            "inline code in page.html"
        );
        assert!(PAGE.contains("src=\"/dashboard/app.js\""));
    }
}
