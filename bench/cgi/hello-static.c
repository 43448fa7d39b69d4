/* The cheapest CGI there is: one write(2), built with gcc -static (no loader, no libraries). */
#include <unistd.h>

int main(void)
{
    static const char response[] = "Content-Type: text/plain\r\n\r\nhello\n";
    return write(1, response, sizeof response - 1) == (ssize_t)(sizeof response - 1) ? 0 : 1;
}
