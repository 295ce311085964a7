//! The frontend as an HTTP JSON server (axum): `POST /frontend/<method>` with the same
//! arguments and answers as the meshrpc gateway's (`{"data": …}`, or `{"errors": […]}`
//! with 422 for the application's errors and 503 for a failed call), so one load generator
//! drives both.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use boutique::frontend::{CheckoutForm, Frontend, FrontendError, Session};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct SessionArgs {
    session: Session,
}
#[derive(Deserialize)]
struct CurrencyArgs {
    session: Session,
    currency: String,
}
#[derive(Deserialize)]
struct ProductArgs {
    session: Session,
    product_id: String,
}
#[derive(Deserialize)]
struct AddArgs {
    session: Session,
    product_id: String,
    quantity: u32,
}
#[derive(Deserialize)]
struct CheckoutArgs {
    session: Session,
    form: CheckoutForm,
}

/// The routes over `frontend`.
pub fn router(frontend: Arc<dyn Frontend>) -> Router {
    Router::new().route("/frontend/{method}", post(call)).with_state(frontend)
}

/// A request's arguments, or why they are not the method's (a 400).
struct BadArgs(String);

fn args<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, BadArgs> {
    serde_json::from_value(body).map_err(|e| BadArgs(e.to_string()))
}

fn answer<T: serde::Serialize>(result: Result<T, FrontendError>) -> Response {
    match result {
        Ok(value) => Json(json!({ "data": value })).into_response(),
        Err(FrontendError::Rpc(e)) => {
            let errors = json!([{ "code": e.code(), "message": e.to_string() }]);
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "data": null, "errors": errors }))).into_response()
        }
        Err(e) => {
            let errors = json!([{ "code": "application", "message": e.to_string(), "detail": e }]);
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "data": null, "errors": errors }))).into_response()
        }
    }
}

async fn call(State(f): State<Arc<dyn Frontend>>, Path(method): Path<String>, Json(body): Json<Value>) -> Response {
    let run = async {
        Ok::<Response, BadArgs>(match method.as_str() {
            "home" => answer(f.home(args::<SessionArgs>(body)?.session).await),
            "set_currency" => {
                let a: CurrencyArgs = args(body)?;
                answer(f.set_currency(a.session, a.currency).await)
            }
            "product" => {
                let a: ProductArgs = args(body)?;
                answer(f.product(a.session, a.product_id).await)
            }
            "add_to_cart" => {
                let a: AddArgs = args(body)?;
                answer(f.add_to_cart(a.session, a.product_id, a.quantity).await)
            }
            "view_cart" => answer(f.view_cart(args::<SessionArgs>(body)?.session).await),
            "checkout" => {
                let a: CheckoutArgs = args(body)?;
                answer(f.checkout(a.session, a.form).await)
            }
            other => {
                let errors = json!([{ "code": "unknown_method", "message": format!("no method `{other}`") }]);
                (StatusCode::NOT_FOUND, Json(json!({ "data": null, "errors": errors }))).into_response()
            }
        })
    };
    run.await.unwrap_or_else(|BadArgs(message)| {
        let errors = json!([{ "code": "bad_request", "message": message }]);
        (StatusCode::BAD_REQUEST, Json(json!({ "data": null, "errors": errors }))).into_response()
    })
}
