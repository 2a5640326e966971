//! `tracer enable`, `disable` and `status`: one request to the running agent each.

use anyhow::{Result, bail};

use super::{DisableArgs, EnableArgs, StatusArgs, require_root, status::render};
use crate::control::{self, Request, Response, client};

pub fn enable(args: EnableArgs) -> Result<()> {
    require_root("enable")?;
    let request = Request::Enable {
        selector: args.selector.selector(),
        service_name: args.service_name,
    };
    done(client::send(
        &control::socket_path(args.socket.control_socket),
        &request,
    )?)
}

pub fn disable(args: DisableArgs) -> Result<()> {
    require_root("disable")?;
    let request = Request::Disable {
        selector: args.selector.selector(),
    };
    done(client::send(
        &control::socket_path(args.socket.control_socket),
        &request,
    )?)
}

pub fn status(args: StatusArgs) -> Result<()> {
    require_root("status")?;
    let socket = control::socket_path(args.socket.control_socket);
    match client::send(&socket, &Request::Status)? {
        Response::Status(report) if args.json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Response::Status(report) if args.metrics => {
            print!("{}", crate::agent::metrics::render(&report.metrics));
            Ok(())
        }
        Response::Status(report) => {
            print!("{}", render(&report));
            Ok(())
        }
        other => done(other),
    }
}

fn done(response: Response) -> Result<()> {
    match response {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!("{message}"),
        Response::Status(_) => bail!("the agent answered with a status report"),
    }
}
