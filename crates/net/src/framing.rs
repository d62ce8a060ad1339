//! QEMU's `-netdev stream` framing: a 4-byte big-endian length, then the
//! Ethernet frame. The decoder refuses absurd lengths instead of allocating.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted (jumbo frames plus headroom).
pub const MAX_FRAME: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("netdev stream announced a {0}-byte frame (limit {MAX_FRAME}): stream is corrupt")]
    TooLong(usize),
    #[error("netdev stream I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame into `buf`; `Ok(false)` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, FramingError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(FramingError::TooLong(n));
    }
    buf.resize(n, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), FramingError> {
    let len = u32::try_from(frame.len()).map_err(|_| FramingError::TooLong(frame.len()))?;
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    w.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, b"hello").await.unwrap();
        write_frame(&mut a, &[]).await.unwrap();
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        drop(a);
        let mut buf = Vec::new();
        assert!(read_frame(&mut b, &mut buf).await.unwrap());
        assert_eq!(buf, b"hello");
        assert!(read_frame(&mut b, &mut buf).await.unwrap());
        assert!(buf.is_empty());
        assert!(matches!(
            read_frame(&mut b, &mut buf).await,
            Err(FramingError::TooLong(_))
        ));
    }

    #[tokio::test]
    async fn clean_and_truncated_ends() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(!read_frame(&mut b, &mut Vec::new()).await.unwrap());
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b, &mut Vec::new()).await.is_err());
    }
}
